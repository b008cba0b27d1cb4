"""The run summary a launcher prints at the end: each step's eval figure before and after, and the loss curves."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, write_jsonl
from utils.evaluation.run_summary import step_dirs, summary_line


def _step(path: Path, rows: list[dict], final: dict | None) -> Path:
    path.mkdir(parents=True)
    write_jsonl(path / "metrics.jsonl", rows)
    if final is not None:
        (path / "eval_results.json").write_text(json.dumps(final))
    return path


def _train(step: int, loss: float) -> dict:
    return {"split": "train", "step": step, "loss": loss}


def test_summary_lines_and_curves(tmp_path):
    sft = _step(tmp_path / "step1_sft", [{"split": "eval", "step": 0, "loss": 2.0, "perplexity": 7.389},
                                         _train(1, 1.5), _train(2, 1.2),
                                         {"split": "eval", "step": 2, "loss": 1.0, "perplexity": 2.718}],
                {"loss": 1.0, "perplexity": 2.718})
    rm = _step(tmp_path / "step2_reward_model", [{"split": "eval", "step": 0, "loss": 0.7, "accuracy": 0.5},
                                                 _train(1, 0.6), {"split": "eval", "step": 1, "loss": 0.5,
                                                                  "accuracy": 0.625}, _train(2, 0.4)], None)
    (tmp_path / "logs").mkdir()
    assert step_dirs(tmp_path) == [sft, rm] and step_dirs(sft) == [sft]
    assert summary_line(sft, [json.loads(l) for l in (sft / "metrics.jsonl").read_text().splitlines()]) == \
        "step1_sft: perplexity 7.389 before training, 2.718 after 2 steps"
    proc = subprocess.run([sys.executable, "-m", "utils.evaluation.run_summary", str(tmp_path)], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1] == "step2_reward_model: accuracy 0.5 before training, 0.625 at step 1 (unfinished)"
    assert (tmp_path / "training_curves.png").stat().st_size > 10_000


def test_summary_of_a_directory_without_runs(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "utils.evaluation.run_summary", str(tmp_path)], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 2 and "holds no metrics.jsonl" in proc.stderr
