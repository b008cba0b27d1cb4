"""The tokenized-data cache as the steps use it (reuse and invalidation), and the data report."""
import argparse
import json

import pytest

import utils.engine.run as run_module
from utils.data.encoding import encode_pairs
from utils.data.splits import DataSpec
from utils.engine.run import Run
from utils.engine.run_log import RunLog
from utils.models.loading import load_tokenizer

ROWS = [{"prompt": "What is 2 plus 2?", "chosen": "It is 4, because 2 and 2 make 4.", "rejected": "5."},
        {"prompt": "What color is snow?", "chosen": "White.", "rejected": "Snow is usually bright green."},
        {"prompt": "Capital of France?", "chosen": "The capital of France is Paris.", "rejected": "Lyon."},
        {"prompt": "How many legs has a cat?", "chosen": "A cat has four legs.", "rejected": "Two."}]


@pytest.fixture
def files(tmp_path):
    train, evals = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    evals.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:2]))
    return str(train), str(evals)


def _encoded(tmp_path, files, tokenizer, calls, max_seq_len=64, template="dschat"):
    args = argparse.Namespace(data_output_path=str(tmp_path / "cache"), output_dir=str(tmp_path / "out"),
                              max_seq_len=max_seq_len)
    run = Run(args, {}, RunLog(args.output_dir), None)

    def encode(rows, split):
        calls.append(split)
        return encode_pairs(rows, tokenizer, template, max_seq_len, "truncate")

    spec = DataSpec([files[0]], [files[1]], data_split="0,1,0")
    return run.encoded_data(spec, tokenizer, encode, "pairs", template=template, max_seq_len=max_seq_len)


def test_second_run_reuses_the_cache_and_any_change_rebuilds(tmp_path, files, opt_dir, llama_dir, monkeypatch):
    opt = load_tokenizer(str(opt_dir), "end", append_eos=True)
    calls = []
    first = _encoded(tmp_path, files, opt, calls)
    assert calls == ["train", "eval"]
    second = _encoded(tmp_path, files, opt, calls)
    assert calls == ["train", "eval"] and second[:2] == first[:2]  # nothing re-tokenized, the same ids
    assert json.loads((tmp_path / "out" / "data_report.json").read_text())["cache"] == "hit"

    _encoded(tmp_path, files, opt, calls, max_seq_len=32)
    _encoded(tmp_path, files, opt, calls, template="lmflow")
    _encoded(tmp_path, files, load_tokenizer(str(opt_dir), "end", append_eos=False), calls)  # the EOS rule
    _encoded(tmp_path, files, load_tokenizer(str(llama_dir), "end", append_eos=True), calls)
    assert len(calls) == 2 * 5
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[:3]))  # the data
    _encoded(tmp_path, files, opt, calls)
    assert calls[10:] == ["train"]  # the eval file did not change
    monkeypatch.setattr(run_module, "ENCODING_VERSION", run_module.ENCODING_VERSION + 1)  # the encoding code changed
    _encoded(tmp_path, files, opt, calls)
    assert calls[11:] == ["train", "eval"]
    assert not list((tmp_path / "cache").rglob("*.pkl")) and not list((tmp_path / "cache").rglob("*.pt"))


def test_data_report_counts_lengths_and_the_length_baseline(tmp_path, files, opt_dir):
    opt = load_tokenizer(str(opt_dir), "end", append_eos=True)
    train, evals, _ = _encoded(tmp_path, files, opt, [])
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    assert report["train_rows"] == 4 and report["eval_rows"] == 2 and report["cache"] == "built"
    assert report["rows_read"] == {files[0]: {"train": 4}, f"{files[1]} (eval)": {"train": 2}}
    lengths = sorted(len(seq) for pair in train for seq in pair.values())
    assert report["train"]["tokens"]["max"] == lengths[-1] and report["train"]["tokens"]["p50"] == lengths[4]
    # the chosen answer is the longer one in 3 of 4 train pairs, in 1 of the 2 eval pairs
    assert report["train"]["longer_wins"] == 0.75 and report["eval"]["longer_wins"] == 0.5
    cut = _encoded(tmp_path, files, opt, [], max_seq_len=20)[2]
    assert cut.truncated + cut.dropped > 0
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    assert report["train"]["tokens"]["max"] == lengths[-1] > 20  # lengths before any cut, to choose --max_seq_len
