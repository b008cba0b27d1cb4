"""A launcher's run directory at a glance: each step's eval figure before and after training, and its loss curves.

    python -m utils.evaluation.run_summary RUN_DIR    # one line per step, and RUN_DIR/training_curves.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from utils.engine.run_log import METRICS
from utils.errors import UserError, exit_on_error
from utils.evaluation.plots import training_curves
from utils.models.export import FINISHED

# The figure each kind of step is judged by: the first of these that its evaluations report.
HEADLINE = ("perplexity", "accuracy")


def step_dirs(run_dir: Path) -> list[Path]:
    """The step output folders of a run directory (or the directory itself, for a one-step launcher)."""
    if (run_dir / METRICS).exists():
        return [run_dir]
    return sorted(path.parent for path in run_dir.glob(f"*/{METRICS}"))


def read_metrics(step_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (step_dir / METRICS).read_text().splitlines() if line.strip()]


def summary_line(step_dir: Path, rows: list[dict]) -> str:
    evals = [r for r in rows if r["split"] == "eval"]
    steps = max((r["step"] for r in rows if r["split"] == "train"), default=0)
    if not evals:
        return f"{step_dir.name}: {steps} steps, no evaluation yet"
    key = next(k for k in HEADLINE if k in evals[0])
    finished = (step_dir / FINISHED).exists()
    last = json.loads((step_dir / FINISHED).read_text()) if finished else evals[-1]
    state = f"after {steps} steps" if finished else f"at step {evals[-1]['step']} (unfinished)"
    return f"{step_dir.name}: {key} {evals[0][key]:.4g} before training, {last[key]:.4g} {state}"


@exit_on_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    dirs = step_dirs(args.run_dir)
    if not dirs:
        raise UserError(f"{args.run_dir} holds no metrics.jsonl: no step has run there yet")
    metrics = {d.name: read_metrics(d) for d in dirs}
    for step_dir in dirs:
        print(summary_line(step_dir, metrics[step_dir.name]))
    print(f"loss curves: {training_curves(metrics, args.run_dir / 'training_curves.png')}")


if __name__ == "__main__":
    main()
