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
COMPARISON = "eval_results.json"


def finished_runs(step_dir: Path) -> dict[str, Path]:
    """The finished step-3 runs under step_dir, by folder name (the algorithm, in the demo)."""
    return {path.parent.name: path.parent for path in sorted(step_dir.glob(f"*/{FINISHED}"))
            if (path.parent / EVAL_BEFORE).exists()}


def run_figures(run: Path) -> dict[str, float]:
    before = json.loads((run / EVAL_BEFORE).read_text())
    after = json.loads((run / FINISHED).read_text())
    out = {"prompts": after["prompts"]}
    for key, _, _ in COLUMNS:
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


def compare_policies(step_dir: Path) -> list[str]:
    """Write step_dir/eval_results.json (per run: each figure before and after) and return the table's lines; none
    without a finished run. A run that started from other held-out figures gets its own "before" row."""
    figures = {name: run_figures(run) for name, run in finished_runs(step_dir).items()}
    if not figures:
        return []
    (step_dir / COMPARISON).write_text(json.dumps(figures, indent=2) + "\n")
    starts = {json.dumps({k: v for k, v in f.items() if k.endswith("_before")}, sort_keys=True)
              for f in figures.values()}
    rows = [["policy", *(title for _, title, _ in COLUMNS)]]
    if len(starts) == 1:
        rows.append(_row("before", next(iter(figures.values())), "before"))
    else:
        rows += [_row(f"before ({name})", f, "before") for name, f in figures.items()]
    rows += [_row(name.upper(), f, "after") for name, f in figures.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    prompts = sorted({f["prompts"] for f in figures.values()})
    title = f"{step_dir.name}, one seeded sample per held-out prompt ({'/'.join(map(str, prompts))} prompts):"
    aligned = [[cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
               for row in rows]
    return [title] + ["  ".join(cells) for cells in aligned]
