"""A launcher's run directory at a glance: each step's eval figure before and after training, its training curves,
and step 3's policies side by side.

    python -m utils.evaluation.run_summary RUN_DIR    # one line per step, a step-3 table, RUN_DIR/training_curves.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from utils.errors import UserError, exit_on_error
from utils.evaluation.plots import training_curves
from utils.evaluation.policy_comparison import compare_policies
from utils.run_files import FINISHED, METRICS

# The figure each kind of step is judged by: the first of these that its evaluations report.
HEADLINE = ("perplexity", "accuracy", "pair_accuracy", "reward")  # DPO's: its held-out preference accuracy


def step_dirs(run_dir: Path) -> list[Path]:
    """The step output folders of a run directory (or the directory itself, for a one-step launcher); step 3's
    may sit one level down, one per algorithm."""
    if (run_dir / METRICS).exists():
        return [run_dir]
    return sorted(path.parent for pattern in (f"*/{METRICS}", f"*/*/{METRICS}") for path in run_dir.glob(pattern))


def read_metrics(step_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (step_dir / METRICS).read_text().splitlines() if line.strip()]


def summary_line(step_dir: Path, rows: list[dict], name: str | None = None) -> str:
    name = name or step_dir.name
    evals = [r for r in rows if r["split"] == "eval"]
    steps = max((r["step"] for r in rows if r["split"] == "train"), default=0)
    if not evals:
        return f"{name}: {steps} steps, no evaluation yet"
    key = next(k for k in HEADLINE if k in evals[0])
    finished = (step_dir / FINISHED).exists()
    last = json.loads((step_dir / FINISHED).read_text()) if finished else evals[-1]
    state = f"after {steps} steps" if finished else f"at step {evals[-1]['step']} (unfinished)"
    before, after = (f"{figures[key]:.4g}{_interval(figures.get('ci95', {}), key)}" for figures in (evals[0], last))
    return f"{name}: {key} {before} before training, {after} {state}"


def _interval(intervals: dict[str, list[float]], key: str) -> str:
    """The figure's 95% interval, where the run reports one (step 3 on held-out answers)."""
    return f" [{intervals[key][0]:.3f}, {intervals[key][1]:.3f}]" if key in intervals else ""


@exit_on_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    dirs = step_dirs(args.run_dir)
    if not dirs:
        raise UserError(f"{args.run_dir} holds no metrics.jsonl: no step has run there yet")
    names = {d: d.relative_to(args.run_dir).as_posix() if d != args.run_dir else d.name for d in dirs}
    metrics = {names[d]: read_metrics(d) for d in dirs}
    for step_dir in dirs:
        print(summary_line(step_dir, metrics[names[step_dir]], names[step_dir]))
    print(f"training curves: {training_curves(metrics, args.run_dir / 'training_curves.png')}")
    for parent in sorted({d.parent for d in dirs if d.parent != args.run_dir.parent}):
        for line in compare_policies(parent):
            print(line)


if __name__ == "__main__":
    main()
