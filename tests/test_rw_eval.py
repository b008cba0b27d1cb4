"""rw_eval.py on a tiny trained reward model: tables, ad hoc scores, pairwise evaluation, normalization, parity."""
import json
import shutil

import pytest
import torch
from conftest import ROOT, main_exits, run_here, run_step2
from transformers import AutoConfig, pipeline

from utils.data.formatting import format_text
from utils.data.sources import read_source
from utils.errors import UserError
from utils.evaluation.reward_report import NORMALIZATION_KEY
from utils.evaluation.scoring import RewardScorer
from utils.objectives.metrics import pair_metrics

RW_EVAL = ROOT / "rw_eval.py"


@pytest.fixture(scope="module")
def reward_model(opt_dir, pair_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("rm") / "rm"
    train, evals = pair_files
    run_step2(["--model_name_or_path", opt_dir, "--data_path", train, "--eval_data_path", evals, "--data_split",
               "0,1,0", "--per_device_train_batch_size", 8, "--max_seq_len", 96, "--learning_rate", 3e-3,
               "--num_train_epochs", 2, "--dropout", 0.0, "--dtype", "fp32", "--output_dir", out])
    return out


def _rw_eval(model_dir, *args, check=True):
    return run_here(RW_EVAL, ["--model_name_or_path", model_dir, *args], check=check)


def _pipeline(model_dir, pairs):
    scorer = pipeline("text-classification", model=str(model_dir), function_to_apply="none", device="cpu")
    return [o["score"] for o in scorer([format_text(p, a, "dschat") for p, a in pairs], batch_size=1)]


def test_built_in_table_and_ad_hoc_scores(reward_model, tmp_path):
    table = _rw_eval(reward_model).stdout.splitlines()
    assert table[0].split() == ["score", "prompt", "|", "answer"] and len(table) == 1 + 12 + 6 + 1
    assert table[-1].startswith("good answer scored higher in") and table[-1].endswith("of 6 examples")
    assert sum(line.lstrip().startswith("yes") for line in table) == int(table[-1].split()[5])

    pairs = [("What is the capital of France?", "The capital of France is Paris."), ("What is 3 plus 4?", "9.")]
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": pairs[1][0], "answer": pairs[1][1]}) + "\n")
    out = _rw_eval(reward_model, "--prompt", pairs[0][0], "--answer", pairs[0][1], "--input", rows, "--output",
                   tmp_path / "scores.json", "--check_pipeline").stdout.splitlines()
    printed = [float(line.split()[0]) for line in out[1:]]
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert [s["score"] for s in saved] == pytest.approx(printed, abs=1e-4) and [s["prompt"] for s in saved] == [p for p, _ in pairs]
    assert printed == pytest.approx(_pipeline(reward_model, pairs), abs=1e-4)


def test_pairwise_evaluation_report_plot_and_normalization(reward_model, pair_files, tmp_path):
    model = tmp_path / "rm"
    shutil.copytree(reward_model, model)
    out = _rw_eval(model, "--data_path", pair_files[1], "--check_pipeline", "--output", tmp_path / "eval.json",
                   "--plot", tmp_path / "hist.png", "--write_normalization", "--top_k", 3).stdout
    assert "pipeline() parity: 32 texts" in out and "calibration (ece" in out and "longer answer wins" in out
    results = json.loads((tmp_path / "eval.json").read_text())

    # The same figures as the trainer's final evaluation on that file, and the pipeline's scores.
    final = json.loads((model / "eval_results.json").read_text())
    for key in ("accuracy", "loss", "chosen_mean", "rejected_mean", "margin_mean", "pairs"):
        assert results["metrics"][key] == pytest.approx(final[key], abs=1e-4), key
    rows = read_source(str(pair_files[1]))[0]["train"]
    chosen = torch.tensor(_pipeline(model, [(r["prompt"], r["chosen"]) for r in rows]))
    rejected = torch.tensor(_pipeline(model, [(r["prompt"], r["rejected"]) for r in rows]))
    assert results["metrics"]["chosen_std"] == pytest.approx(pair_metrics(chosen, rejected)["chosen_std"], abs=1e-4)
    assert sum(b["count"] for b in results["calibration"]["bins"]) == 2 * len(rows)
    assert sum(b["pairs"] for b in results["accuracy_by_length"]) == len(rows)
    assert len(results["extremes"]["top"]) == 3 and results["extremes"]["top"][0]["score"] == pytest.approx(
        max(chosen.max(), rejected.max()).item(), abs=1e-4)

    png = (tmp_path / "hist.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    # The constants are in config.json, and scoring then shows normalized scores that use them.
    constants = getattr(AutoConfig.from_pretrained(model), NORMALIZATION_KEY)
    assert constants == results["normalization"] and constants["fitted_on"] == 2 * len(rows)
    line = _rw_eval(model, "--prompt", rows[0]["prompt"], "--answer", rows[0]["chosen"]).stdout.splitlines()
    assert line[0].split()[:3] == ["score", "z", "minmax"]
    score, z, minmax = map(float, line[1].split()[:3])
    assert z == pytest.approx((score - constants["mean"]) / constants["std"], abs=1e-3)
    assert minmax == pytest.approx(2 * (score - constants["min"]) / (constants["max"] - constants["min"]) - 1, abs=1e-3)


def test_check_pipeline_fails_loudly_on_a_difference(reward_model):
    scorer = RewardScorer(str(reward_model))
    texts = [format_text("What is 2 plus 2?", "4.", "dschat")]
    scores, _ = scorer.score(texts, batch_size=1)
    assert scorer.check_pipeline(texts, scores) < 1e-4
    with pytest.raises(UserError, match="pipeline\\(\\) scores differ from rw_eval's by up to 0.001"):
        scorer.check_pipeline(texts, [scores[0] + 1e-3])


def test_directories_that_are_not_reward_models(opt_dir, reward_model, tmp_path, monkeypatch, capsys):
    causal = _rw_eval(opt_dir, check=False)  # a user's command line: one line, no traceback
    assert causal.returncode == 2 and "is a OPTForCausalLM, not a reward model" in causal.stderr
    assert "Traceback" not in causal.stderr

    def refused(model_dir, message):
        code, _, stderr = main_exits(RW_EVAL, ["--model_name_or_path", model_dir], monkeypatch, capsys)
        assert code == 2 and message in stderr, stderr

    headless = tmp_path / "headless"
    shutil.copytree(opt_dir, headless)
    config = json.loads((headless / "config.json").read_text())
    (headless / "config.json").write_text(json.dumps(config | {"architectures": ["OPTForSequenceClassification"],
                                                                "id2label": {"0": "reward"}}))
    refused(headless, "has no trained score head (missing score.weight)")
    two = tmp_path / "two_labels"
    shutil.copytree(reward_model, two)
    config = json.loads((two / "config.json").read_text())
    (two / "config.json").write_text(json.dumps(config | {"id2label": {"0": "a", "1": "b"}}))
    refused(two, "has 2 labels; a reward model has one")
    refused(tmp_path / "missing", "cannot load a reward model from")


def test_skipped_rows_are_counted_named_by_kind_and_saved(reward_model, tmp_path, monkeypatch, capsys):
    good = {"prompt": "What is 3 plus 4?", "chosen": "3 plus 4 is 7.", "rejected": "3 plus 4 is 9."}
    data = tmp_path / "mixed.jsonl"
    data.write_text("\n".join([json.dumps(good), json.dumps(good | {"rejected": good["chosen"]}),
                               json.dumps(good | {"chosen": 7}), "{not json"]) + "\n")
    out = _rw_eval(reward_model, "--data_path", data, "--on_bad_row", "skip", "--output", tmp_path / "eval.json",
                   "--plot", tmp_path / "h.png").stdout
    assert "skipped 2 bad rows (--on_bad_row skip): 1 mistyped field, 1 not JSON" in out
    assert f"{data}:3: field 'chosen' must be a string" in out and f"{data}:4: invalid JSON" in out
    assert "skipped 1 pairs whose chosen and rejected are identical" in out
    results = json.loads((tmp_path / "eval.json").read_text())
    assert results["metrics"]["pairs"] == 1
    assert results["skipped"] == {"bad_rows": 2, "bad_row_kinds": {"mistyped field": 1, "not JSON": 1}, "ties": 0,
                                  "identical_pairs": 1}
    code, _, stderr = main_exits(RW_EVAL, ["--model_name_or_path", reward_model, "--data_path", data], monkeypatch,
                                 capsys)  # the default stops at the first bad row
    assert code == 2 and f"{data}:3: field 'chosen' must be a string" in stderr
