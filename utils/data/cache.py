"""A cache of tokenized training data under --data_output_path, so that a rerun skips the slow tokenization.

An entry is a folder named after the kind of data and the fingerprint of everything that decides its content (the
key). It holds the rows as Arrow files written by `datasets` (no pickles: loading runs no code, and a shared filesystem
is fine) and meta.json with the key, the build report and the row count. An entry is written into a temporary folder
that is then renamed into place, so a folder under an entry's name is always complete: a crash leaves only a `.tmp-*`
folder, which no lookup reads.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from transformers import PreTrainedTokenizerBase

from utils.distributed import barrier, is_main
from utils.errors import UserError

if TYPE_CHECKING:
    import datasets

Rows = list[dict[str, list[int]]]
Report = dict[str, Any]
META = "meta.json"


def fingerprint(obj: Any) -> str:
    """sha256 hex of the canonical JSON of obj: equal keys name the same entry whatever the order of their dicts.

    Raises TypeError where JSON cannot represent obj.
    """
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _token_text(value: Any) -> str | list[str]:
    """A special-tokens-map value (a token, maybe an AddedToken, or a list of them) as plain JSON."""
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else str(value)


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Changes whenever the tokenizer would produce other ids, so that a cached entry never outlives its tokenizer.

    The backend's full JSON covers the vocabulary, merges, added tokens and post-processor (BOS/EOS appended there);
    the rest is what transformers keeps outside it: special tokens, padding and truncation sides, the chat template.
    """
    return fingerprint({
        "backend": tokenizer.backend_tokenizer.to_str(),
        "special_tokens": {name: _token_text(value) for name, value in tokenizer.special_tokens_map.items()},
        "special_ids": list(tokenizer.all_special_ids),
        "pad_id": tokenizer.pad_token_id,
        "eos_id": tokenizer.eos_token_id,
        "bos_id": tokenizer.bos_token_id,
        "padding_side": tokenizer.padding_side,
        "truncation_side": tokenizer.truncation_side,
        "chat_template": tokenizer.chat_template,
    })


def cached(cache_dir: str | Path | None, key: dict[str, Any], build: Callable[[], tuple[Rows, Report]]
           ) -> tuple[Rows, Report, bool]:
    """Return (rows, report, hit): the entry for `key` under `cache_dir`, made by `build()` where there is none.

    With cache_dir None, every rank calls build() and nothing is written (hit False). Otherwise only rank 0 builds and
    writes; the other ranks wait at a barrier and then load what it wrote, so cache_dir must be on a filesystem that
    every rank sees. hit is True where the rows were loaded rather than built: on rank 0 where the entry existed, on
    the other ranks always, as they never build. Should rank 0 fail, its launcher ends the ranks left at the barrier.
    """
    entry_id = fingerprint(key)[:16]  # a TypeError here, before any work, for a key JSON cannot represent
    if cache_dir is None:
        rows, report = build()
        return rows, report, False
    entry = Path(cache_dir) / f"{key.get('kind', 'data')}-{entry_id}"
    hit = True
    if is_main():
        if _complete(entry):
            rows, report = _load(entry)
        else:
            rows, report = _build_entry(entry, key, build)
            hit = False
    barrier()
    if not is_main():
        rows, report = _load(entry)
    return rows, report, hit


def _write_error(cache_dir: Path, err: OSError) -> UserError:
    return UserError(f"--data_output_path {cache_dir}: cannot write the data cache: {err}")


def _complete(entry: Path) -> bool:
    """meta.json is written last, and the folder only gets the entry's name once it is there."""
    return (entry / META).is_file()


def _build_entry(entry: Path, key: dict[str, Any], build: Callable[[], tuple[Rows, Report]]) -> tuple[Rows, Report]:
    """Build and write the entry through a temporary sibling folder, which is removed whatever happens.

    The folder is made before build() so that an unwritable cache_dir fails before the slow part.
    """
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.parent / f".tmp-{entry.name}-{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()
    except OSError as err:
        raise _write_error(entry.parent, err) from None
    try:
        rows, report = build()
        _save(tmp, key, rows, report)
        placed = _place(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # already gone where the rename succeeded
    return (rows, report) if placed else _load(entry)


def _place(tmp: Path, entry: Path) -> bool:
    """Rename the finished folder to the entry's name; False where another job put a complete entry there first."""
    try:
        os.rename(tmp, entry)
    except OSError as err:
        if _complete(entry):
            return False
        raise _write_error(entry.parent, err) from None
    return True


def _to_dataset(rows: Rows) -> datasets.Dataset:
    """The rows as a Dataset, refused unless they are what load gives back: the same keys in every row, int lists.

    from_list takes its columns from the first row, so another key set would be lost or padded with None.
    """
    import datasets
    import pyarrow as pa

    columns = rows[0].keys()
    if any(row.keys() != columns for row in rows):
        raise TypeError(f"cached rows must all have the keys {sorted(columns)}")
    dataset = datasets.Dataset.from_list(rows)
    for field in dataset.data.schema:
        if not (pa.types.is_list(field.type)
                and (pa.types.is_integer(field.type.value_type) or pa.types.is_null(field.type.value_type))):
            raise TypeError(f"cached column {field.name!r} must hold lists of ints, not {field.type}")
    return dataset


def _save(folder: Path, key: dict[str, Any], rows: Rows, report: Report) -> None:
    """Rows as Arrow files (none for no rows: from_list cannot type an empty list), then meta.json."""
    dataset = _to_dataset(rows) if rows else None
    meta = json.dumps({"key": key, "report": report, "rows": len(rows)}, ensure_ascii=False)
    try:
        if dataset is not None:
            import datasets

            shown = datasets.is_progress_bar_enabled()
            datasets.disable_progress_bars()  # a bar per save is noise in the training log
            try:
                dataset.save_to_disk(str(folder))
            finally:
                if shown:
                    datasets.enable_progress_bars()
        (folder / META).write_text(meta, encoding="utf-8")
    except OSError as err:
        raise _write_error(folder.parent, err) from None


def _load(entry: Path) -> tuple[Rows, Report]:
    import datasets

    meta = json.loads((entry / META).read_text(encoding="utf-8"))
    rows = datasets.load_from_disk(str(entry)).to_list() if meta["rows"] else []
    return rows, meta["report"]
