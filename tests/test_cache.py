"""The tokenized-data cache: hits, rebuilds on key changes, crash safety, Arrow-only files, tokenizer fingerprints."""
from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
from tokenizers import processors

import utils.data.cache as cache
from utils.data.cache import cached, fingerprint, tokenizer_fingerprint
from utils.errors import UserError
from utils.models.tiny import build_tokenizer

ROWS = [{"chosen": [1, 5, 9, 2], "rejected": [1, 7, 2]}, {"chosen": [1, 300, 2], "rejected": []},
        {"chosen": [1, 2**40, 2], "rejected": [1, 4, 4, 4, 2]}]
REPORT = {"rows_in": 4, "dropped": 1, "truncated": {"chosen": 0, "rejected": 2}, "note": "café"}


class Builder:
    """A build function that counts its calls and hands out fresh copies, so callers cannot alias its data."""

    def __init__(self, rows: list[dict] = ROWS, report: dict = REPORT) -> None:
        self.rows, self.report, self.calls = rows, report, 0

    def __call__(self) -> tuple[list[dict], dict]:
        self.calls += 1
        return json.loads(json.dumps(self.rows)), json.loads(json.dumps(self.report))


def entry_dir(cache_dir: Path, key: dict) -> Path:
    return cache_dir / f"{key.get('kind', 'data')}-{fingerprint(key)[:16]}"


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def tok_fps() -> tuple[str, str]:
    """The fingerprint of the tiny Llama tokenizer, and of the same tokenizer with a pad token added."""
    tok = build_tokenizer("llama")
    plain = tokenizer_fingerprint(tok)
    tok.add_special_tokens({"pad_token": "<|pad|>"})
    return plain, tokenizer_fingerprint(tok)


@pytest.fixture
def key(tok_fps: tuple[str, str]) -> dict:
    return {"kind": "reward", "files": ["train.jsonl"], "max_seq_len": 128, "template": "dschat",
            "tokenizer": tok_fps[0]}


def test_fingerprint_is_canonical_json_sha256():
    assert fingerprint({"b": [1, "é"], "a": None}) == fingerprint({"a": None, "b": [1, "é"]})
    assert fingerprint({"a": 1}) == "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
    assert fingerprint({"a": 1}) != fingerprint({"a": "1"})


def test_second_call_loads_without_building(tmp_path, key):
    build = Builder()
    rows1, report1, hit1 = cached(tmp_path / "cache", key, build)
    rows2, report2, hit2 = cached(tmp_path / "cache", key, build)
    assert build.calls == 1
    assert (hit1, hit2) == (False, True)
    assert rows1 == ROWS and rows2 == ROWS
    assert report1 == REPORT and report2 == REPORT
    assert all(type(ids) is list and all(type(i) is int for i in ids) for row in rows2 for ids in row.values())
    assert [list(row) for row in rows2] == [["chosen", "rejected"]] * 3
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [entry_dir(tmp_path / "cache", key).name]
    meta = json.loads((entry_dir(tmp_path / "cache", key) / "meta.json").read_text(encoding="utf-8"))
    assert meta == {"key": key, "report": REPORT, "rows": 3}


def test_sft_rows_round_trip_and_default_kind(tmp_path):
    rows = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4], "labels": [4]}]
    build = Builder(rows, {})
    key = {"max_seq_len": 8}
    assert cached(tmp_path, key, build) == (rows, {}, False)
    assert cached(tmp_path, key, build) == (rows, {}, True)
    assert build.calls == 1
    assert entry_dir(tmp_path, key).name == f"data-{fingerprint(key)[:16]}"
    assert entry_dir(tmp_path, key).is_dir()


@pytest.mark.parametrize("field, value", [("max_seq_len", 256), ("template", "chatml"), ("files", ["other.jsonl"]),
                                          ("kind", "sft"), ("tokenizer", None), ("seed", 1)])
def test_any_key_change_rebuilds(tmp_path, key, tok_fps, field, value):
    build = Builder()
    changed = dict(key, **{field: tok_fps[1] if field == "tokenizer" else value})
    assert cached(tmp_path, key, build)[2] is False
    assert cached(tmp_path, changed, build)[2] is False
    assert build.calls == 2
    assert cached(tmp_path, key, build)[2] is True and cached(tmp_path, changed, build)[2] is True
    assert build.calls == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([entry_dir(tmp_path, key).name,
                                                                  entry_dir(tmp_path, changed).name])


def test_no_cache_dir_builds_every_time_and_writes_nothing(tmp_path, key, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build = Builder()
    for _ in range(3):
        assert cached(None, key, build) == (ROWS, REPORT, False)
    assert build.calls == 3
    assert list(tmp_path.iterdir()) == []


def test_key_must_be_json(tmp_path):
    build = Builder()
    with pytest.raises(TypeError, match="Path is not JSON serializable"):
        cached(tmp_path, {"kind": "reward", "path": Path("x")}, build)
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        cached(None, {"kind": "reward", "ids": {1, 2}}, build)
    assert build.calls == 0
    assert list(tmp_path.iterdir()) == []


def test_only_arrow_and_json_files(tmp_path, key):
    cached(tmp_path, key, Builder())
    entry = entry_dir(tmp_path, key)
    assert files_under(tmp_path) == {f"{entry.name}/{name}" for name in
                                     ("meta.json", "state.json", "dataset_info.json", "data-00000-of-00001.arrow")}
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".pkl", ".pickle", ".pt", ".bin", ".npy")]


def test_empty_rows_round_trip(tmp_path, key):
    build = Builder([], {"rows_in": 0})
    assert cached(tmp_path, key, build) == ([], {"rows_in": 0}, False)
    assert cached(tmp_path, key, build) == ([], {"rows_in": 0}, True)
    assert build.calls == 1
    assert files_under(tmp_path) == {f"{entry_dir(tmp_path, key).name}/meta.json"}


def test_failed_build_leaves_nothing(tmp_path, key):
    def broken() -> tuple[list[dict], dict]:
        raise RuntimeError("tokenizer exploded")

    with pytest.raises(RuntimeError, match="tokenizer exploded"):
        cached(tmp_path, key, broken)
    assert list(tmp_path.iterdir()) == []
    build = Builder()
    assert cached(tmp_path, key, build) == (ROWS, REPORT, False)
    assert build.calls == 1


def test_crash_while_saving_never_leaves_a_final_entry(tmp_path, key, monkeypatch):
    real_save = datasets.Dataset.save_to_disk

    def save_then_die(self, path, *args, **kwargs):
        real_save(self, path, *args, **kwargs)  # the Arrow files are all there, meta.json is not yet
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", save_then_die)
    build = Builder()
    with pytest.raises(UserError, match=r"^--data_output_path .*: cannot write the data cache: .*No space left"):
        cached(tmp_path, key, build)
    assert not entry_dir(tmp_path, key).exists()
    assert list(tmp_path.iterdir()) == []  # the temporary folder was removed too
    monkeypatch.undo()
    assert cached(tmp_path, key, build) == (ROWS, REPORT, False)
    assert build.calls == 2
    assert cached(tmp_path, key, build) == (ROWS, REPORT, True)


def test_leftover_temporary_folder_is_ignored(tmp_path, key):
    """What a killed job leaves: a half-written temporary folder, even one that already has a meta.json."""
    leftover = tmp_path / f".tmp-{entry_dir(tmp_path, key).name}-4242-deadbeef"
    leftover.mkdir()
    (leftover / "meta.json").write_text(json.dumps({"key": key, "report": {"stale": True}, "rows": 1}))
    (leftover / "data-00000-of-00001.arrow").write_bytes(b"\x00garbage")
    build = Builder()
    assert cached(tmp_path, key, build) == (ROWS, REPORT, False)
    assert build.calls == 1
    assert cached(tmp_path, key, build) == (ROWS, REPORT, True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([leftover.name, entry_dir(tmp_path, key).name])


def test_entry_placed_by_another_job_meanwhile_wins(tmp_path, key):
    """Another job finishes the same entry while this one builds: this one drops its copy and uses the other's."""
    theirs = Builder(ROWS[:1], {"built_by": "the other job"})

    def racing_build() -> tuple[list[dict], dict]:
        assert cached(tmp_path, key, theirs)[2] is False
        return Builder()()

    assert cached(tmp_path, key, racing_build) == (ROWS[:1], {"built_by": "the other job"}, False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [entry_dir(tmp_path, key).name]
    assert cached(tmp_path, key, Builder()) == (ROWS[:1], {"built_by": "the other job"}, True)


def test_other_ranks_load_what_rank_zero_wrote(tmp_path, key, monkeypatch):
    cached(tmp_path, key, Builder())
    monkeypatch.setattr(cache, "is_main", lambda: False)
    build = Builder()
    assert cached(tmp_path, key, build) == (ROWS, REPORT, True)
    assert build.calls == 0


def test_unwritable_cache_dir_is_a_user_error_before_building(tmp_path, key):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    build = Builder()
    with pytest.raises(UserError, match=rf"^--data_output_path {blocker}/cache: cannot write the data cache: "):
        cached(blocker / "cache", key, build)
    assert build.calls == 0


@pytest.mark.parametrize("rows", [[{"chosen": [1.5, 2.0]}], [{"chosen": ["a"]}], [{"chosen": 3}],
                                  [{"chosen": [1]}, {"chosen": [2], "rejected": [3]}], [{"chosen": [1]}, {}]])
def test_rows_that_would_not_round_trip_are_refused(tmp_path, key, rows):
    with pytest.raises(TypeError, match="^cached "):
        cached(tmp_path, key, Builder(rows, {}))
    assert list(tmp_path.iterdir()) == []


def test_tokenizer_fingerprint_is_stable_across_loads():
    assert tokenizer_fingerprint(build_tokenizer("llama")) == tokenizer_fingerprint(build_tokenizer("llama"))
    assert tokenizer_fingerprint(build_tokenizer("llama")) != tokenizer_fingerprint(build_tokenizer("opt"))


def test_tokenizer_fingerprint_follows_special_tokens(tok_fps):
    plain, with_pad = tok_fps
    assert len(plain) == 64 and plain != with_pad
    tok = build_tokenizer("llama")
    tok.add_special_tokens({"additional_special_tokens": ["<|eot|>"]})
    assert tokenizer_fingerprint(tok) not in (plain, with_pad)


def test_tokenizer_fingerprint_follows_post_processor_padding_side_and_chat_template(tok_fps):
    plain = tok_fps[0]
    tok = build_tokenizer("llama")
    before = tok("hello")["input_ids"]
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A $B </s>", special_tokens=[("<s>", tok.bos_token_id),
                                                                      ("</s>", tok.eos_token_id)])
    assert tok("hello")["input_ids"] == before + [tok.eos_token_id]
    appended = tokenizer_fingerprint(tok)
    assert appended != plain
    tok.padding_side = "left"
    left = tokenizer_fingerprint(tok)
    assert left not in (plain, appended)
    tok.chat_template = "{{ messages }}"
    assert tokenizer_fingerprint(tok) not in (plain, appended, left)
