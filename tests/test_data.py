"""Reading, checking and splitting preference rows; every bad input is named by file, line and field."""
import gzip
import json

import pytest

from utils.data.splits import DataSpec, load_rows
from utils.data.sources import read_source
from utils.errors import UserError

GOOD = {"prompt": "What is 2 plus 2?", "chosen": "It is 4.", "rejected": "It is 7."}


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def test_reads_jsonl_json_array_and_gzip(tmp_path):
    rows = [GOOD, GOOD | {"chosen": "Four."}]
    jsonl = _write(tmp_path / "a.jsonl", [json.dumps(r) for r in rows])
    array = tmp_path / "b.json"
    array.write_text(json.dumps(rows))
    gz = tmp_path / "c.jsonl.gz"
    with gzip.open(gz, "wt") as handle:
        handle.write("\n".join(json.dumps(r) for r in rows))
    for spec in (jsonl, str(array), str(gz)):
        assert read_source(spec) == ({"train": rows}, 0)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="data file not found: .*nope.jsonl"):
        read_source(str(tmp_path / "nope.jsonl"))


def test_unsupported_file_and_unknown_dataset(tmp_path):
    (tmp_path / "data.txt").write_text("prompt chosen rejected\n")
    with pytest.raises(UserError, match="unsupported data file .*data.txt"):
        read_source(str(tmp_path / "data.txt"))
    with pytest.raises(UserError, match="cannot load dataset .*no-such-dataset"):
        read_source(str(tmp_path / "no-such-dataset"))


def test_dataset_folder_with_train_and_test_splits(tmp_path):
    """The `datasets` path that hub names take too, on a local folder (Dahoas/rm-static's layout)."""
    transcript = GOOD | {"prompt": "\n\nHuman: What is 2 plus 2?\n\nAssistant:", "chosen": " 4."}
    _write(tmp_path / "train.jsonl", [json.dumps(transcript | {"response": " 4."})] * 3)
    _write(tmp_path / "test.jsonl", [json.dumps(GOOD)])
    splits, _ = read_source(str(tmp_path))
    assert splits == {"train": [transcript] * 3, "test": [GOOD]}
    other = tmp_path / "other"
    other.mkdir()
    _write(other / "train.jsonl", [json.dumps({"prompt": "p", "answer": "a"})])
    with pytest.raises(UserError, match=r"\[train\] lacks column\(s\) chosen, rejected; it has prompt, answer"):
        read_source(str(other))


def test_malformed_line_is_named(tmp_path):
    path = _write(tmp_path / "bad.jsonl", [json.dumps(GOOD), '{"prompt": "x", "chosen": ', json.dumps(GOOD)])
    with pytest.raises(UserError, match=r"bad.jsonl:2: invalid JSON"):
        read_source(path)


@pytest.mark.parametrize("row, message", [
    ({"prompt": "p", "chosen": "c"}, r":1: field 'rejected' is missing"),
    ({"prompt": "p", "chosen": "  ", "rejected": "r"}, r":1: field 'chosen' is empty"),
    ({"prompt": "p", "chosen": 3, "rejected": "r"}, r":1: field 'chosen' must be a string, got int"),
    (["p", "c", "r"], r":1: expected an object with fields"),
])
def test_bad_fields_are_named(tmp_path, row, message):
    path = _write(tmp_path / "rows.jsonl", [json.dumps(row)])
    with pytest.raises(UserError, match=message):
        read_source(path)


def test_non_utf8_is_named(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + '{"prompt": "caf\xe9"}'.encode("latin-1") + b"\n")
    with pytest.raises(UserError, match=r"latin1.jsonl:2: not valid UTF-8"):
        read_source(str(path))


def test_identical_pairs_are_skipped_and_counted(tmp_path):
    rows = [GOOD] * 8 + [GOOD | {"rejected": GOOD["chosen"]}] * 2
    train, evals, report = load_rows(DataSpec([_write(tmp_path / "d.jsonl", [json.dumps(r) for r in rows])],
                                               [_write(tmp_path / "e.jsonl", [json.dumps(GOOD | {"prompt": "?"})])],
                                               data_split="0,1,0"))
    assert len(train) == 8 and report.identical_pairs_skipped == 2
    assert any("skipped 2 pairs" in line for line in report.lines())


def test_step_3_holds_out_prompts_it_never_trains_on(tmp_path):
    """Synthetic questions recur across rows, so the held-out prompts are those the step's own share lacks."""
    train, evals, report = load_rows(DataSpec(["synthetic:4000"], data_split="2,4,1", phase=2, fields=("prompt",)))
    assert len(train) == 571 and len(evals) >= 128
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in evals}
    assert f"skipped {report.eval_prompts_in_train_skipped} held-out prompts that this step trains on" in \
        " ".join(report.lines()) and report.eval_prompts_in_train_skipped > 100
    prompts = _write(tmp_path / "p.jsonl", [json.dumps({"prompt": p}) for p in ("a", "b")])
    with pytest.raises(UserError, match=r"no eval rows \(1 held-out prompts skipped as the step trains on them\)"):
        load_rows(DataSpec([prompts], [_write(tmp_path / "e.jsonl", [json.dumps({"prompt": "a"})])],
                           fields=("prompt",)))


def test_empty_after_filtering_is_an_error(tmp_path):
    same = GOOD | {"rejected": GOOD["chosen"]}
    path = _write(tmp_path / "same.jsonl", [json.dumps(same)] * 4)
    with pytest.raises(UserError, match="no training rows left"):
        load_rows(DataSpec([path], [path], data_split="0,1,0"))


def test_data_split_shares_are_disjoint_and_seeded(tmp_path):
    rows = [GOOD | {"prompt": f"q{i}"} for i in range(100)]
    path = _write(tmp_path / "many.jsonl", [json.dumps(r) for r in rows])
    shares = [load_rows(DataSpec([path], phase=phase, seed=3))[0] for phase in range(3)]
    evals = load_rows(DataSpec([path], seed=3))[1]
    prompts = [{r["prompt"] for r in share} for share in shares]
    assert [len(p) for p in prompts] == [18, 36, 36]  # 90 rows after a 10% eval hold-out
    assert not (prompts[0] & prompts[1] or prompts[1] & prompts[2] or prompts[0] & prompts[2])
    assert not {r["prompt"] for r in evals} & set().union(*prompts)
    assert load_rows(DataSpec([path], seed=3))[0] == shares[1]


def test_a_data_split_that_leaves_rows_out_says_so(tmp_path):
    path = _write(tmp_path / "many.jsonl", [json.dumps(GOOD | {"prompt": f"q{i}"}) for i in range(100)])
    report = load_rows(DataSpec([path], seed=3))[2]  # DeepSpeed-Chat's 2,4,4, step 2
    assert f"{path}: --data_split 2,4,4 leaves step 2 36 of its 90 train rows; --data_split 0,1,0 uses them all" \
        in report.lines()
    assert report.split_shares == {path: {"kept": 36, "of": 90, "eval": 10, "eval_from": "--eval_fraction 0.1 held out"}}
    assert report.lines()[0] == (f"data: {path} [train 100] -> train 36 (--data_split 2,4,4: step 2's share of 90), "
                                 "eval 10 (--eval_fraction 0.1 held out)")
    everything = load_rows(DataSpec([path], data_split="0,1,0", seed=3))[2]
    assert not any("--data_split" in line for line in everything.lines())


def test_bad_data_split(tmp_path):
    path = _write(tmp_path / "x.jsonl", [json.dumps(GOOD)] * 3)
    with pytest.raises(UserError, match="positive sum"):
        load_rows(DataSpec([path], data_split="0,0,0"))


def test_synthetic_has_held_out_split_without_overlap():
    splits, _ = read_source("synthetic:500")
    train, test = splits["train"], splits["test"]
    assert len(train) == 500 and test
    assert not {tuple(r.values()) for r in train} & {tuple(r.values()) for r in test}


def test_step_3_prompt_rows_from_several_sources_share_columns_and_repeat_by_prompt(tmp_path):
    with_answers = _write(tmp_path / "a.jsonl", [json.dumps({"prompt": f"q{i}", "answer": str(i), "id": i})
                                                 for i in range(6)])
    plain = _write(tmp_path / "b.jsonl", [json.dumps({"prompt": f"r{i}"}) for i in range(4)])
    held = _write(tmp_path / "e.jsonl", [json.dumps({"prompt": "q1", "id": 99}), json.dumps({"prompt": "new"})])
    train, evals, report = load_rows(DataSpec([with_answers, plain], [held], data_split="0,0,1", phase=2,
                                              fields=("prompt",)))
    assert len(train) == 10 and all(set(r) == {"prompt", "answer", "id"} for r in train + evals)
    assert {r["prompt"]: (r["answer"], r["id"]) for r in train if r["prompt"] in ("q2", "r2")} == {
        "q2": ("2", 2), "r2": (None, None)}
    # q1 is trained on: held out with another id it is still the same prompt (a whole-row comparison kept it)
    assert evals == [{"prompt": "new", "answer": None, "id": None}] and report.eval_prompts_in_train_skipped == 1
    assert f"{with_answers} [train 6; columns: answer, id] -> train 6 (all)" in report.lines()[0]
    assert f"{plain} [train 4] -> train 4 (all)" in report.lines()[0]
