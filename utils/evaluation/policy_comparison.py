"""Step-3 runs side by side on their shared held-out prompts: the starting policy, then each algorithm's result.

A launcher that trains one policy per algorithm (the demo: RUN_DIR/step3_rlhf/{ppo,raft,rloo}) ends with this table, so
that a gain in reward shows next to what it cost: KL, EOS share, length and distinct-2.
"""
from __future__ import annotations

import json
from pathlib import Path

from utils.run_files import EVAL_BEFORE, FINISHED

# (metric, column title, format); every metric but the KL and the win rate is kept before and after.
COLUMNS = (("reward", "reward", "{:.2f}"), ("greedy_reward", "greedy", "{:.2f}"), ("flawed_share", "flawed", "{:.1%}"),
           ("kl_to_reference", "KL", "{:.3f}"), ("eos_share", "EOS", "{:.0%}"), ("answer_length", "length", "{:.1f}"),
           ("distinct2", "distinct-2", "{:.3f}"), ("win_rate", "win rate", "{:.0%}"))
NOT_BEFORE = ("kl_to_reference", "win_rate")
# Kept before and after beside the columns: math_answer's shares right, sampled and greedy (utils.objectives.policy).
CHECKS = ("accuracy", "greedy_accuracy")
COMPARISON = "eval_results.json"


def finished_runs(step_dir: Path) -> dict[str, Path]:
    """The finished step-3 runs under step_dir, by folder name (the algorithm, in the demo)."""
    return {path.parent.name: path.parent for path in sorted(step_dir.glob(f"*/{FINISHED}"))
            if (path.parent / EVAL_BEFORE).exists()}


def run_figures(run: Path) -> dict[str, float]:
    before = json.loads((run / EVAL_BEFORE).read_text())
    after = json.loads((run / FINISHED).read_text())
    out = {"prompts": after["prompts"]}
    for key in [key for key, _, _ in COLUMNS] + list(CHECKS):
        if key in after:
            out[key if key in NOT_BEFORE else f"{key}_after"] = after[key]
        if key in before and key not in NOT_BEFORE:
            out[f"{key}_before"] = before[key]
    return out


def _row(name: str, figures: dict[str, float], suffix: str) -> list[str]:
    cells = [name]
    for key, _, fmt in COLUMNS:
        value = figures.get(key if key in NOT_BEFORE else f"{key}_{suffix}")
        cells.append("-" if value is None or (suffix == "before" and key in NOT_BEFORE) else fmt.format(value))
    return cells


def _reward_is_accuracy(figures: dict[str, float]) -> bool:
    """Whether the run's reward is math_answer's alone (1 right, 0 wrong), as with no reward model."""
    return all(figures.get(f"accuracy_{when}") == figures.get(f"reward_{when}") is not None
               for when in ("before", "after"))


def _before_rows(figures: dict[str, dict[str, float]]) -> list[tuple[str, dict[str, float], list[str]]]:
    """The runs grouped by their step-0 figures, the largest group first: (label, its figures, its runs). One group
    is "before"; with several, the largest one of several runs stays "before" and the others name their runs."""
    groups: dict[str, list[str]] = {}
    for name, f in figures.items():
        start = json.dumps({k: v for k, v in f.items() if k.endswith("_before")}, sort_keys=True)
        groups.setdefault(start, []).append(name)
    ordered = sorted(groups.values(), key=len, reverse=True)
    plain = len(ordered) == 1 or len(ordered[0]) > 1
    return [("before" if plain and i == 0 else f"before ({', '.join(names)})", figures[names[0]], names)
            for i, names in enumerate(ordered)]


def compare_policies(step_dir: Path) -> list[str]:
    """Write step_dir/eval_results.json (per run: each figure before and after) and return the table's lines; none
    without a finished run. Runs that started from the same held-out figures share a "before" row, above them;
    a run whose reward is math_answer's share right (GRPO on synthetic_math, say) gets a line saying so."""
    figures = {name: run_figures(run) for name, run in finished_runs(step_dir).items()}
    if not figures:
        return []
    (step_dir / COMPARISON).write_text(json.dumps(figures, indent=2) + "\n")
    rows = [["policy", *(title for _, title, _ in COLUMNS)]]
    for label, start, names in _before_rows(figures):
        rows.append(_row(label, start, "before"))
        rows += [_row(name.upper(), figures[name], "after") for name in names]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    prompts = sorted({f["prompts"] for f in figures.values()})
    title = f"{step_dir.name}, one seeded sample per held-out prompt ({'/'.join(map(str, prompts))} prompts):"
    aligned = [[cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
               for row in rows]
    notes = [f"{name.upper()}: its reward and greedy are math_answer's, the share of answers right"
             for name, f in figures.items() if _reward_is_accuracy(f)]
    return [title] + ["  ".join(cells) for cells in aligned] + notes
