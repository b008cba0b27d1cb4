"""The demo's step-3 runs over several seeds: the same figures per algorithm and seed, their min and median, and
the demo's targets checked for every seed, so that a result is not one lucky draw.

    python -m utils.evaluation.seed_table OUT_JSON SEED=STEP_DIR...   # STEP_DIR holds one run per algorithm

OUT_JSON gets, per algorithm and seed, the figures of step_dir/eval_results.json. The exit status is 1 when a target
is missed for some seed.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from utils.errors import UserError, exit_on_error
from utils.evaluation.policy_comparison import finished_runs, run_figures

MIN_FLAWED_BEFORE = 40  # flawed answers counted before training: fewer, and one prompt decides a 4x cut


@dataclass(frozen=True)
class Target:
    """A figure computed from a run's figures, and the rule it must keep; `only` limits it to one algorithm."""

    title: str
    figure: Callable[[dict[str, float]], float]
    rule: str
    met: Callable[[float], bool]
    fmt: str
    only: str | None = None
    unbounded: str = "none left"  # what an infinite ratio means: no flaw left after, or none right before

    def show(self, value: float) -> str:
        return self.unbounded if value == math.inf else self.fmt.format(value)

    def applies(self, algo: str) -> bool:
        return self.only is None or self.only == algo


def _flaw_cut(f: dict[str, float]) -> float:
    return f["flawed_share_before"] / f["flawed_share_after"] if f["flawed_share_after"] else math.inf


def _accuracy_gain(f: dict[str, float]) -> float:
    return f["accuracy_after"] / f["accuracy_before"] if f["accuracy_before"] else math.inf


# The runs that learn from the step-2 reward model: its flaws must fall without the answers narrowing.
REWARD_MODEL_TARGETS = (
    Target("flawed before", lambda f: round(f["flawed_share_before"] * f["prompts"]), f">= {MIN_FLAWED_BEFORE}",
           lambda v: v >= MIN_FLAWED_BEFORE, "{:.0f}"),
    Target("flaws cut", _flaw_cut, ">= 4x", lambda v: v >= 4, "{:.1f}x"),
    Target("reward gain", lambda f: f["reward_after"] - f["reward_before"], "> 0", lambda v: v > 0, "{:+.2f}"),
    Target("EOS share", lambda f: f["eos_share_after"], ">= 0.95", lambda v: v >= 0.95, "{:.3f}"),
    Target("distinct-2 kept", lambda f: f["distinct2_after"] / f["distinct2_before"], ">= 0.7x", lambda v: v >= 0.7,
           "{:.2f}x"),
    Target("KL", lambda f: f["kl_to_reference"], "<= 1, RLOO", lambda v: v <= 1, "{:.3f}", only="rloo"),
)
# GRPO on synthetic_math, rewarded by math_answer alone: the share of sampled answers right must double and rise
# by 25 points, with answers that still end and do not grow into strings of guesses (math_answer reads the last
# number).
MATH_TARGETS = (
    Target("sampled right", _accuracy_gain, ">= 2x", lambda v: v >= 2, "{:.2f}x", unbounded="from 0"),
    Target("points gained", lambda f: 100 * (f["accuracy_after"] - f["accuracy_before"]), ">= +25",
           lambda v: v >= 25, "{:+.1f}"),
    Target("EOS share", lambda f: f["eos_share_after"], ">= 0.95", lambda v: v >= 0.95, "{:.3f}"),
    Target("length", lambda f: f["answer_length_after"] / f["answer_length_before"], "<= 1.5x", lambda v: v <= 1.5,
           "{:.2f}x"),
)
MATH_ALGOS = ("grpo",)


def targets_for(algo: str) -> tuple[Target, ...]:
    return MATH_TARGETS if algo in MATH_ALGOS else REWARD_MODEL_TARGETS


def collect(step_dirs: dict[int, Path]) -> dict[str, dict[str, dict[str, float]]]:
    """Per algorithm, per seed: the finished run's figures. An algorithm missing for some seed is an error."""
    runs = {seed: finished_runs(path) for seed, path in step_dirs.items()}
    algos = sorted({algo for found in runs.values() for algo in found})
    if not algos:
        raise UserError(f"no finished step-3 run in {', '.join(map(str, step_dirs.values()))}")
    for seed, found in runs.items():
        if missing := [algo for algo in algos if algo not in found]:
            raise UserError(f"seed {seed}: no finished run of {', '.join(missing)} in {step_dirs[seed]}")
    return {algo: {str(seed): run_figures(found[algo]) for seed, found in runs.items()} for algo in algos}


def _table(figures: dict[str, dict[str, dict[str, float]]], targets: tuple[Target, ...]
           ) -> tuple[list[str], list[str], int]:
    """One table of algorithms that share their targets: its lines, the missed targets, and the targets checked."""
    rows = [["algorithm", *(f"{t.title} ({t.rule})" for t in targets)]]
    misses = []
    for algo, per_seed in figures.items():
        row = [algo.upper()]
        for target in targets:
            values = {seed: target.figure(f) for seed, f in per_seed.items()}
            row.append(f"{target.show(min(values.values()))} / {target.show(statistics.median(values.values()))}")
            if target.applies(algo):
                misses += [f"MISSED: {algo} seed {seed}: {target.title} {target.show(value)}"
                           for seed, value in values.items() if not target.met(value)]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    checked = sum(t.applies(algo) for algo, per_seed in figures.items() for t in targets for _ in per_seed)
    return lines, misses, checked


def report(figures: dict[str, dict[str, dict[str, float]]]) -> tuple[list[str], int]:
    """The min/median tables, one per set of targets, and one line per missed target; the number missed."""
    seeds = next(iter(figures.values()))
    lines = [f"step 3 over seeds {', '.join(seeds)}: min / median of each figure (target)"]
    misses, checked = [], 0
    for targets in (REWARD_MODEL_TARGETS, MATH_TARGETS):
        group = {algo: per_seed for algo, per_seed in figures.items() if targets_for(algo) is targets}
        if group:
            table, missed, count = _table(group, targets)
            lines += table
            misses += missed
            checked += count
    lines += misses or [f"all {checked} targets met for every seed"]
    return lines, len(misses)


@exit_on_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_json", type=Path)
    parser.add_argument("runs", nargs="+", metavar="SEED=STEP_DIR")
    args = parser.parse_args()
    step_dirs = {}
    for pair in args.runs:
        seed, sep, path = pair.partition("=")
        if not sep or not seed.isdigit():
            raise UserError(f"{pair}: expected SEED=STEP_DIR, such as 7=demo_output/step3_seeds/seed_7")
        step_dirs[int(seed)] = Path(path)
    figures = collect(step_dirs)
    args.out_json.write_text(json.dumps(figures, indent=2) + "\n")
    lines, missed = report(figures)
    print("\n".join(lines))
    raise SystemExit(1 if missed else 0)


if __name__ == "__main__":
    main()
