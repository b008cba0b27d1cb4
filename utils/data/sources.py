"""Reading every kind of source into rows of prompt, chosen and rejected (or the fields a step reads), split by split.

A source is a built-in synthetic generator, a local file (.jsonl, .json, .csv, optionally .gz, or .parquet), or a
folder or hub dataset read by `datasets`, including DeepSpeed-Chat's dataset names and GSM8K. A bad row is an error
naming the file, line and field, or, with --on_bad_row skip, a counted skip. Prompt rows (step 3) keep every other
column of their record beside the prompt, such as the `answer` a reward function checks.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Iterable

from utils.data.synthetic import generate_pairs, generate_sft_rows
from utils.data.synthetic_math import math_splits, sft_row
from utils.errors import UserError

FIELDS = ("prompt", "chosen", "rejected")
SFT_FIELDS = ("prompt", "chosen")  # step 1 trains on the prompt and the chosen answer; a rejected field is ignored
PROMPT_FIELDS = ("prompt",)  # step 3: a prompt, and every other column of its record beside it
BENCHMARK_FIELDS = ("prompt", "chosen", "rejected", "subset")  # rw_eval.py --benchmark; a row keeps its id too
SYNTHETIC_DEFAULT_SIZE = 4000
ASSISTANT = "\n\nAssistant:"
SOURCES_HELP = (
    "Sources: 'synthetic' (built-in seeded pairs; 'synthetic:N' for N train pairs plus a held-out tenth), "
    "'synthetic_flawed' or 'synthetic_flawed:N' (step 1 only: seeded answers, a quarter of them rude, evasive or "
    "looping, for the step-3 demo), 'synthetic_math' or 'synthetic_math:N' (seeded one-digit arithmetic "
    "problems: step 3 reads their answer column, for checkable rewards, step 1 the answer as 'The answer is N.'), "
    "local .jsonl/.json/.csv files (optionally .gz) or .parquet files, a folder of data files, or a Hugging Face "
    "dataset name, DeepSpeed-Chat's and openai/gsm8k included. Rows have prompt, chosen and rejected fields (see "
    "--prompt_column), or Anthropic-style chosen and rejected transcripts, or chosen and rejected chat message "
    "lists; step 3 reads prompts alone, also GSM8K's question and answer, and keeps a row's other columns (an "
    "answer, say) for reward functions. Several blend.")
# Built-in generated pairs and step-1 rows by name, each read as 'name' or 'name:N': n rows from a seed.
SYNTHETIC_GENERATORS: dict[str, Callable[..., list[dict[str, str]]]] = {
    "synthetic": generate_pairs, "synthetic_flawed": generate_sft_rows}
# Every built-in source: the fields it has, and what it is for, as a step that reads another field is told.
BUILT_IN: dict[str, tuple[tuple[str, ...], str]] = {
    "synthetic": (FIELDS, ""),
    "synthetic_flawed": (SFT_FIELDS, "it is for step 1 (supervised fine-tuning), to start the step-3 demo from a "
                                     "flawed policy; for pairs use synthetic"),
    "synthetic_math": (SFT_FIELDS, "it is arithmetic problems with one right answer each, for step 1 and for step 3's "
                                   "checkable rewards (--data_split 0,0,1 or --prompt_data_path)"),
}
# Hub datasets of questions with worked answers, and the configuration read; a step that reads pairs refuses them.
ANSWER_DATASETS = {"openai/gsm8k": "main", "gsm8k": "main"}

Row = dict[str, Any]  # prompt: str or a list of chat messages; chosen, rejected: str; a prompt row's other columns
Splits = dict[str, list[Row]]


@dataclass
class RowChecker:
    """Applies --on_bad_row: raise on the first bad row, or skip it and count it."""

    on_bad_row: str = "error"
    columns: dict[str, str] = field(default_factory=dict)  # our field name -> the source's column name
    answer_lists: tuple[str, ...] = ()  # fields that hold a list of answers (best-of-N's rejected), or one answer
    kinds: Counter[str] = field(default_factory=Counter)  # skipped rows by kind: 'not JSON', 'mistyped field', ...
    examples: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return sum(self.kinds.values())

    def bad(self, where: str, kind: str, message: str) -> None:
        if self.on_bad_row == "error":
            raise UserError(f"{where}: {message} (--on_bad_row skip skips such rows and counts them)")
        self.kinds[kind] += 1
        if len(self.examples) < 5:
            self.examples.append(f"{where}: {message}")

    def column(self, name: str) -> str:
        return self.columns.get(name, name)


def _is_messages(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value)


def _split_conversations(chosen: object, rejected: object, fields: tuple[str, ...]) -> tuple[object, str, str | None]:
    """Chosen and rejected whole conversations (transcripts or message lists) to a shared prompt and two answers."""
    if _is_messages(chosen):
        if chosen[-1]["role"] != "assistant":
            raise ValueError("the last chosen message must be the assistant's answer")
        if "rejected" in fields and (not _is_messages(rejected) or rejected[:-1] != chosen[:-1]):
            raise ValueError("chosen and rejected conversations differ before their last message")
        return chosen[:-1], chosen[-1]["content"], rejected[-1]["content"] if "rejected" in fields else None
    if not isinstance(chosen, str) or ASSISTANT not in chosen:
        raise ValueError("without a prompt field, chosen must be a transcript with '\\n\\nAssistant:' or a message list")
    cut = chosen.rindex(ASSISTANT) + len(ASSISTANT)
    prompt, answer = chosen[:cut], chosen[cut:]
    if "rejected" not in fields:
        return prompt, answer, None
    if not isinstance(rejected, str) or not rejected.startswith(prompt) or ASSISTANT in rejected[cut:]:
        raise ValueError("chosen and rejected transcripts differ before the last '\\n\\nAssistant:'")
    return prompt, answer, rejected[cut:]


def _gsm8k_layout(columns: Collection[object], checker: RowChecker) -> bool:
    """GSM8K's layout: a question and its worked answer, and no prompt or chosen column."""
    return ("question" in columns and "answer" in columns and checker.column("prompt") not in columns
            and checker.column("chosen") not in columns)


def _refuse_pairs(where: str, fields: tuple[str, ...]) -> None:
    if "rejected" in fields:
        raise UserError(f"{where}: questions with worked answers (GSM8K's layout: question, answer) have no rejected "
                        "answers to train a reward model or DPO on; they are prompts for step 3's checkable rewards "
                        "(--data_split 0,0,1 or --prompt_data_path)")


def _from_gsm8k(record: dict, fields: tuple[str, ...], checker: RowChecker) -> dict:
    """The question is the prompt; the answer stays a column of its own (step 3) or is the chosen answer (step 1)."""
    out = {checker.column("prompt"): record["question"]} | {k: v for k, v in record.items() if k != "question"}
    if "chosen" in fields:
        out[checker.column("chosen")] = out.pop("answer")
    return out


def to_row(record: object, where: str, fields: tuple[str, ...], checker: RowChecker) -> Row | None:
    """One source record as a checked row, or None when it is bad and --on_bad_row skip counts it.

    A prompt row (fields PROMPT_FIELDS) keeps, as they are, the record's columns other than prompt, chosen and
    rejected and those --prompt_column and friends name; utils.data.columns makes them JSON values.
    """
    if not isinstance(record, dict):
        checker.bad(where, "not an object", f"expected an object with fields {', '.join(fields)}")
        return None
    if _gsm8k_layout(record, checker):
        _refuse_pairs(where, fields)
        record = _from_gsm8k(record, fields, checker)
    values = {name: record.get(checker.column(name)) for name in dict.fromkeys(FIELDS + fields)}
    if _is_messages(values["chosen"]) or (values["prompt"] is None and checker.column("chosen") in record):
        # whole conversations (a prompt column beside them, as in UltraFeedback, repeats their first turns)
        try:
            values["prompt"], values["chosen"], values["rejected"] = _split_conversations(
                values["chosen"], values["rejected"], fields)
        except ValueError as err:
            checker.bad(where, "mismatched conversations", str(err))
            return None
    for name in fields:
        value, column = values[name], checker.column(name)
        if name in checker.answer_lists and value is not None:
            values[name] = value = [value] if isinstance(value, str) else value
            if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
                continue
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                checker.bad(where, "empty field", f"field '{column}' is empty or holds an empty answer")
            else:
                checker.bad(where, "mistyped field", f"field '{column}' must be an answer or a list of answers")
            return None
        if value is None:
            checker.bad(where, "missing field", f"field '{column}' is missing")
        elif name == "prompt" and _is_messages(value):
            continue
        elif not isinstance(value, str):
            checker.bad(where, "mistyped field", f"field '{column}' must be a string, got {type(value).__name__}")
        elif not value.strip():
            checker.bad(where, "empty field", f"field '{column}' is empty")
        else:
            continue
        return None
    row = {name: values[name] for name in fields}
    if fields == BENCHMARK_FIELDS:  # its name in the benchmark's reports: its id, else where it was read
        row["id"] = record["id"] if isinstance(record.get("id"), (str, int)) else where
    if fields != PROMPT_FIELDS:
        return row
    if None in record:  # csv.DictReader's key for values beyond the header's columns
        checker.bad(where, "values beyond the header", f"{len(record[None])} more values than the header has columns")
        return None
    named = set(FIELDS) | {checker.column(name) for name in FIELDS}
    return row | {column: value for column, value in record.items() if column not in named}


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UnicodeError(f"{where}: not valid UTF-8 ({err.reason} at byte {err.start})") from None


def _json_records(path: Path, raw: bytes, checker: RowChecker) -> Iterable[tuple[str, object]]:
    lines = raw.splitlines()
    first = next((line.strip() for line in lines if line.strip()), b"")
    if ".jsonl" not in path.name and first.startswith(b"["):  # one JSON array, rows named by their index
        try:
            items = json.loads(_decode(raw, str(path)))
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None
        yield from ((f"{path}: item {i}", item) for i, item in enumerate(items))
        return
    for lineno, line in enumerate(lines, start=1):
        where = f"{path}:{lineno}"
        try:
            text = _decode(line, where).strip()
            if text:
                yield where, json.loads(text)
        except UnicodeError as err:
            checker.bad(where, "not UTF-8", str(err).split(": ", 1)[1])
        except json.JSONDecodeError as err:
            checker.bad(where, "not JSON", f"invalid JSON: {err.msg} (column {err.colno})")


def _csv_records(path: Path, raw: bytes) -> Iterable[tuple[str, object]]:
    reader = csv.DictReader(io.StringIO(_decode(raw, str(path)), newline=""))
    for record in reader:
        yield f"{path}:{reader.line_num}", record


def _parquet_records(path: Path) -> Iterable[tuple[str, object]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a file that is not parquet
        raise UserError(f"{path}: cannot read parquet: {err}") from None
    yield from ((f"{path}: row {i}", record) for i, record in enumerate(table.to_pylist()))


FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".jsonl.gz", ".json.gz", ".csv.gz", ".parquet")


def _read_file(path: Path, fields: tuple[str, ...], checker: RowChecker) -> list[Row]:
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    if path.name.endswith(".parquet"):
        records = _parquet_records(path)
    else:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as handle:
            raw = handle.read()
        records = _csv_records(path, raw) if ".csv" in path.name else _json_records(path, raw, checker)
    try:  # one record at a time, so that bad rows are met, and reported, in file order
        return [row for where, record in records if (row := to_row(record, where, fields, checker)) is not None]
    except UnicodeError as err:
        raise UserError(str(err)) from None


# DeepSpeed-Chat's dataset names whose columns are not already prompt/chosen/rejected: a record to those fields.
def _webgpt(record: dict) -> dict | None:
    """openai/webgpt_comparisons: the better-scored answer wins, citations removed; ties are not preferences."""
    if record["score_0"] == record["score_1"]:
        return None
    answers = [re.sub(r" [\(\[].*?[\)\]]", "", record[f"answer_{i}"]) for i in (0, 1)]
    best = 0 if record["score_0"] > record["score_1"] else 1
    return {"prompt": record["question"]["full_text"], "chosen": answers[best], "rejected": answers[1 - best]}


def _shp(record: dict) -> dict | None:
    """stanfordnlp/SHP: labels is 1 when human_ref_A is preferred."""
    a, b = record["human_ref_A"], record["human_ref_B"]
    return {"prompt": record["history"], "chosen": a if record["labels"] == 1 else b,
            "rejected": b if record["labels"] == 1 else a}


def _rlhf_reward(record: dict) -> dict | None:
    """yitingxie/rlhf-reward-datasets: the prompt lacks its final 'Assistant:', which the answers carry."""
    return {"prompt": record["prompt"] + "Assistant:", "chosen": record["chosen"].split("Assistant:")[-1],
            "rejected": record["rejected"].split("Assistant:")[-1]}


ADAPTERS: dict[str, Callable[[dict], dict | None] | None] = {
    "Dahoas/rm-static": None,  # None: already prompt/chosen/rejected columns
    "Dahoas/full-hh-rlhf": None,
    "Dahoas/synthetic-instruct-gptj-pairwise": None,
    "Anthropic/hh-rlhf": None,  # chosen/rejected transcripts, split at the last "\n\nAssistant:"
    "yitingxie/rlhf-reward-datasets": _rlhf_reward,
    "openai/webgpt_comparisons": _webgpt,
    "stanfordnlp/SHP": _shp,
}


def _read_dataset(name: str, fields: tuple[str, ...], checker: RowChecker) -> tuple[Splits, int]:
    """A folder of data files or a hub dataset through `datasets`; DeepSpeed-Chat's names through their adapter.

    Also returns how many records the dataset's own rule skipped (webgpt ties)."""
    import datasets

    known = "/".join(Path(name).parts[-2:])  # a hub name, or a local copy in a folder of that name
    if known in ANSWER_DATASETS:
        _refuse_pairs(name, fields)  # before a download
    try:  # a local folder has no configurations, only a hub dataset
        splits = datasets.load_dataset(name, None if Path(name).exists() else ANSWER_DATASETS.get(known))
    except Exception as err:  # datasets raises many types here: missing, offline, unreadable
        raise UserError(f"cannot load dataset '{name}': {err}") from None
    adapter = ADAPTERS.get(known)
    out: Splits = {}
    rule_skips = 0
    for split, data in splits.items():
        if adapter is None:
            names = set(data.column_names)
            needed = [] if _gsm8k_layout(names, checker) else [  # to_row reads GSM8K's layout, or refuses it
                checker.column(f) for f in fields if f != "prompt" or checker.column("prompt") in names]
            missing = [c for c in needed if c not in names]
            if missing:
                raise UserError(f"dataset '{name}' [{split}] lacks column(s) {', '.join(missing)}; it has "
                                f"{', '.join(data.column_names)}")
        rows = []
        for i, record in enumerate(data):
            where = f"{name} [{split}] row {i}"
            if adapter is not None:
                try:
                    record = adapter(record)
                except (KeyError, TypeError) as err:
                    raise UserError(f"{where}: not in the schema of {name}: {err!r}") from None
                if record is None:
                    rule_skips += 1
                    continue
            if (row := to_row(record, where, fields, checker)) is not None:
                rows.append(row)
        out[split] = rows
    return out, rule_skips


def _read_synthetic(spec: str, fields: tuple[str, ...]) -> Splits:
    """N generated train rows ('name:N', or SYNTHETIC_DEFAULT_SIZE) and a held-out tenth that repeats none of them.

    A repeat is a train row with the same fields. For prompts alone (step 3) it is a whole generated row: the ~1,000
    questions recur across 4,000 rows, and load_rows skips the held-out prompts that the step itself trains on.
    synthetic_math has rules of its own (utils.data.synthetic_math).
    """
    name, colon, size_text = spec.partition(":")
    has, use = BUILT_IN[name]
    lacks = [f for f in fields if f not in has]
    if lacks:
        raise UserError(f"--data_path {spec}: {name} has no {' or '.join(lacks)} answers; {use}")
    size = SYNTHETIC_DEFAULT_SIZE
    if colon:
        try:
            size = int(size_text)
        except ValueError:
            raise UserError(f"--data_path {spec}: expected {name}:N with N a number of rows") from None
        if size < 1:
            raise UserError(f"--data_path {spec}: expected {name}:N with N at least 1")
    if name == "synthetic_math":
        splits = math_splits(size)
        return splits if "chosen" not in fields else {split: list(map(sft_row, part)) for split, part in splits.items()}
    generated = SYNTHETIC_GENERATORS[name](size + max(1, size // 10), seed=0)
    keys = fields if len(fields) > 1 else tuple(generated[0])
    seen = {tuple(r[k] for k in keys) for r in generated[:size]}
    test = [r for r in generated[size:] if tuple(r[k] for k in keys) not in seen]
    return {split: [{k: row[k] for k in fields} for row in part] for split, part in (("train", generated[:size]),
                                                                                      ("test", test))}


def read_source(spec: str, fields: tuple[str, ...] = FIELDS, checker: RowChecker | None = None
                ) -> tuple[Splits, int]:
    """A source's rows by split name, and how many records its dataset's own rule skipped."""
    checker = checker or RowChecker()
    if spec.partition(":")[0] in BUILT_IN:
        return _read_synthetic(spec, fields), 0
    path = Path(spec)
    if path.name.endswith(FILE_SUFFIXES):
        return {"train": _read_file(path, fields, checker)}, 0
    if path.is_file():
        raise UserError(f"unsupported data file '{spec}': use .jsonl, .json or .csv (optionally .gz) or .parquet")
    return _read_dataset(spec, fields, checker)
