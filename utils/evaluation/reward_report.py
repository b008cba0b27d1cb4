"""rw_eval.py's reports: score tables, and the pairwise evaluation as a readable table, a JSON file and a PNG."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig

from utils.data.formatting import format_prompt, format_text
from utils.data.sources import Row
from utils.evaluation.plots import score_histogram
from utils.evaluation.reward_analysis import (
    accuracy_by_length,
    balance,
    calibration,
    extremes,
    longer_answer_wins,
    normalization,
    normalize,
)
from utils.evaluation.scoring import RewardScorer
from utils.models.reward_model import NORMALIZATION_KEY
from utils.objectives.metrics import pair_metrics


def _short(text: str, width: int = 70) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:width - 1] + "…"


def print_scores(rows: list[tuple[Any, str]], scores: list[float], constants: dict[str, float] | None) -> None:
    """Score, then z and min-max scores where the model directory holds fitted constants, then the texts."""
    header = f"{'score':>9}" + (f"{'z':>8}{'minmax':>8}" if constants else "") + "  prompt | answer"
    print(header)
    for (prompt, answer), score in zip(rows, scores):
        extra = "".join(f"{v:8.3f}" for v in normalize(score, constants).values()) if constants else ""
        print(f"{score:9.4f}{extra}  {_short(prompt, 50)} | {_short(answer, 60)}")


def write_normalization(model_dir: str, constants: dict[str, float]) -> None:
    """Store the constants in config.json, where rw_eval.py (and any loader that reads the config) finds them."""
    config = AutoConfig.from_pretrained(model_dir)
    setattr(config, NORMALIZATION_KEY, constants)
    config.save_pretrained(model_dir)


def _table(results: dict[str, Any]) -> list[str]:
    m = results["metrics"]
    lines = [f"pairs {m['pairs']}   accuracy {m['accuracy']:.4f} (ties wrong)   loss {m['loss']:.4f}   "
             f"longer answer wins {results['longer_answer_wins']:.4f}",
             f"chosen   mean {m['chosen_mean']:9.4f}  std {m['chosen_std']:8.4f}",
             f"rejected mean {m['rejected_mean']:9.4f}  std {m['rejected_std']:8.4f}   margin mean {m['margin_mean']:.4f}",
             f"balance: {results['balance']['chosen_above_median']:.3f} of chosen above the median score, "
             f"{results['balance']['rejected_below_median']:.3f} of rejected below it",
             "", f"calibration (ece {results['calibration']['ece']:.4f}): sigmoid(margin) bin, pairs, predicted, "
                 "observed"]
    lines += [f"  {b['bin']}  {b['count']:6d}  {b['predicted']:.3f}  {b['observed']:.3f}"
              for b in results["calibration"]["bins"]]
    lines += ["", "accuracy by pair length (tokens of both texts):"]
    lines += [f"  {b['tokens']:>12}  {b['pairs']:6d} pairs  accuracy {b['accuracy']:.4f}"
              for b in results["accuracy_by_length"]]
    n = results["normalization"]
    lines += ["", f"normalization (fitted on {n['fitted_on']} scores): mean {n['mean']:.4f}, std {n['std']:.4f}, "
                  f"min {n['min']:.4f}, max {n['max']:.4f}"]
    for name in ("top", "bottom"):
        lines += ["", f"{name} {len(results['extremes'][name])} scored texts:"]
        lines += [f"  {e['score']:9.4f}  {_short(e['text'], 100)}" for e in results["extremes"][name]]
    return lines


def evaluate_pairs(scorer: RewardScorer, rows: list[Row], args: argparse.Namespace, skipped: dict[str, Any]
                   ) -> dict[str, Any]:
    """Score both answers of every pair and report everything docs/rw_eval.md lists; `skipped` counts the rows
    that reading left out, kept with the results."""
    texts = [format_text(r["prompt"], r[k], args.template, scorer.tokenizer) for k in ("chosen", "rejected")
             for r in rows]
    scores, lengths = scorer.score(texts, args.batch_size)
    if args.check_pipeline:
        worst = scorer.check_pipeline(texts[:args.check_samples], scores[:args.check_samples])
        print(f"pipeline() parity: {min(len(texts), args.check_samples)} texts, largest difference {worst:.2e}")
    n = len(rows)
    chosen, rejected = torch.tensor(scores[:n]), torch.tensor(scores[n:])
    labels = [f"[{'chosen' if i < n else 'rejected'}] {_short(format_prompt(rows[i % n]['prompt'], 'dschat'), 40)}"
              f" | {rows[i % n]['chosen' if i < n else 'rejected']}" for i in range(2 * n)]
    results = {
        "model": scorer.model_dir, "data_path": args.data_path, "template": args.template, "skipped": skipped,
        "metrics": pair_metrics(chosen, rejected),
        "longer_answer_wins": longer_answer_wins(lengths[:n], lengths[n:]),
        "calibration": calibration(chosen, rejected),
        "accuracy_by_length": accuracy_by_length(chosen, rejected, [a + b for a, b in zip(lengths[:n], lengths[n:])]),
        "balance": balance(chosen, rejected),
        "normalization": normalization(scores),
        "extremes": extremes(scores, labels, args.top_k),
    }
    print("\n".join(_table(results)))
    plot = score_histogram(chosen, rejected, args.plot,
                           f"{Path(scorer.model_dir).name}: accuracy {results['metrics']['accuracy']:.3f} "
                           f"on {n} pairs")
    print(f"\nhistogram written to {plot}")
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
        print(f"results written to {args.output}")
    if args.write_normalization:
        write_normalization(scorer.model_dir, results["normalization"])
        print(f"normalization constants written to {Path(scorer.model_dir) / 'config.json'} ({NORMALIZATION_KEY})")
    return results
