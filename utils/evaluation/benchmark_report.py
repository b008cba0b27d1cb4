"""rw_eval.py --benchmark: RewardBench's scoring or best-of-N sets, for one model or two side by side, as a table,
the `benchmark` section of the JSON, and a plot of the subsets' accuracies."""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from utils.data.encoding import encode_answer_sets
from utils.data.formatting import format_text
from utils.data.sources import Row
from utils.errors import UserError
from utils.evaluation.benchmark import SECTIONS, TIE, figures, verdict
from utils.evaluation.model_comparison import compare
from utils.evaluation.plots import subset_accuracy_bars
from utils.evaluation.scoring import RewardScorer

TITLES = {"rewardbench": "RewardBench", "best_of_n": "best-of-N"}


@dataclass
class ModelRun:
    """One model's pass over the items: its scores (None where the item could not be cut to fit), which items
    were cut, how they were batched, and the seconds it took to encode and score them."""

    scorer: RewardScorer
    template: str
    scores: list[list[float] | None] = field(default_factory=list)
    cut: list[bool] = field(default_factory=list)
    layout: str = ""
    seconds: float = 0.0


def _several_chosen(rows: list[Row]) -> tuple[list[Row], list[Any]]:
    """Best-of-N rows with one chosen answer, and the names of those with several (RewardBench 2's Ties subset,
    which its own formula scores): they are left out, and named."""
    kept = [r for r in rows if len(r["chosen"]) == 1]
    return kept, [r["id"] for r in rows if len(r["chosen"]) != 1]


def score_run(scorer: RewardScorer, template: str, rows: list[Row], args: argparse.Namespace) -> ModelRun:
    """Each item's answers cut as step 2 cuts (--max_seq_len, --overlength) and scored, timed from text to scores."""
    if not scorer.tokenizer.is_fast:
        raise UserError(f"--benchmark cuts items by character offsets, which need a fast tokenizer: "
                        f"'{scorer.model_dir}' has none")
    run = ModelRun(scorer, template)
    start = time.perf_counter()
    sets, run.cut = encode_answer_sets(rows, scorer.tokenizer, template, args.max_seq_len, args.overlength)
    kept = [s for s in sets if s is not None]
    scores, run.layout = scorer.score_answer_sets(kept, args.batch_size, shared=not args.no_shared_prompt)
    run.seconds = time.perf_counter() - start
    it = iter(scores)
    run.scores = [None if s is None else next(it) for s in sets]
    return run


def _model_results(mode: str, run: ModelRun, rows: list[Row], keep: list[int]) -> dict[str, Any]:
    """One model's figures on the items every model scored."""
    return {"model": run.scorer.model_dir, "template": run.template, "layout": run.layout,
            "items_per_second": len(keep) / run.seconds, "cut": [rows[i]["id"] for i, cut in enumerate(run.cut) if cut]
            } | figures(mode, [rows[i]["subset"] for i in keep], [rows[i]["id"] for i in keep],
                        [run.scores[i] for i in keep])


def _row(label: str, items: str, values: list[str], extra: str = "") -> str:
    return f"{label:<28}{items:>6}" + "".join(f"{v:>9}" for v in values) + extra


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def table(mode: str, results: list[dict[str, Any]], comparison: dict[str, Any] | None) -> list[str]:
    """Sections (RewardBench) and subsets, one accuracy column per model; with two models, the items only one
    gets right and McNemar's p-value."""
    names = ["A", "B"][:len(results)] if comparison else ["accuracy"]
    lines = [f"{name} = {r['model']} (--template {r['template']})" for name, r in zip(names, results)
             ] if comparison else []
    extra = f"{'only A':>8}{'only B':>8}{'p':>9}" if comparison else ""
    lines.append(_row("", "items", names, extra))

    def subset_line(subset: str) -> str:
        values = [_figure(r["subsets"][subset]["accuracy"]) for r in results]
        if not comparison:
            return _row("  " + subset, str(results[0]["subsets"][subset]["items"]), values)
        c = comparison["subsets"][subset]
        return _row("  " + subset, str(c["items"]), values,
                    f"{len(c['only_a']):>8}{len(c['only_b']):>8}{c['p_value']:>9.4f}")

    subsets = list(results[0]["subsets"])
    if mode == "rewardbench":
        for section, members in SECTIONS.items():
            lines.append(_row(section, "", [_figure(r["sections"][section]) for r in results]))
            lines += [subset_line(s) for s in members if s in results[0]["subsets"]]
        present = sum(v is not None for v in results[0]["sections"].values())
        lines.append(_row(f"overall (mean of {present} sections)", "", [_figure(r["overall"]) for r in results]))
        unknown = results[0]["unknown_subsets"]
        if unknown:
            lines.append(f"{len(unknown)} subset(s) not in RewardBench's sections, kept out of them and of the overall "
                         "score:")
            lines += [subset_line(s) for s in unknown]
    else:
        lines += [subset_line(s) for s in subsets]
        lines.append(_row("mean over subsets", "", [_figure(r["mean_over_subsets"]) for r in results]))
    if comparison:
        c = comparison["overall"]
        lines.append(_row("all items", str(c["items"]), [_figure(c["accuracy_a"]), _figure(c["accuracy_b"])],
                          f"{len(c['only_a']):>8}{len(c['only_b']):>8}{c['p_value']:>9.4f}"))
    return lines


def _notes(results: list[dict[str, Any]], comparison: dict[str, Any] | None, dropped: list[Any],
           several: list[Any], max_seq_len: int) -> list[str]:
    """A line for every item scored in a way a reader needs to know, or left out; each names the items."""
    def named(items: list[Any]) -> str:
        return ", ".join(map(str, items[:5])) + (f" and {len(items) - 5} more" if len(items) > 5 else "")

    lines = []
    absent = [name for name, value in results[0].get("sections", {}).items() if value is None]
    if absent:
        lines.append(f"no subset of {', '.join(absent)} in this file: the overall score is the mean of the other "
                     "sections (RewardBench's own script would count such a section as 0)")
    if several:
        lines.append(f"left out {len(several)} items with several chosen answers (RewardBench 2's Ties subset has "
                     f"its own formula): {named(several)}")
    if dropped:
        lines.append(f"left out {len(dropped)} items whose answers alone exceed --max_seq_len {max_seq_len} (or "
                     f"--overlength drop){' for either model' if comparison else ''}: {named(dropped)}")
    for label, r in zip(["A: ", "B: "] if comparison else [""], results):
        if r["cut"]:
            lines.append(f"{label}{len(r['cut'])} items had their prompt cut from the left to fit --max_seq_len "
                         f"{max_seq_len}: {named(r['cut'])}")
        ties = [name for s in r["subsets"].values() for name in s["ties"]]
        if ties:
            lines.append(f"{label}{len(ties)} items scored within {TIE:g} of the best rejected answer, counted wrong: "
                         f"{named(ties)}")
    if comparison:
        for who in ("a", "b"):
            ahead = [s for s, c in comparison["subsets"].items() if c["ahead"] == who]
            lines.append(f"{who.upper()} ahead in {len(ahead)} subset(s){': ' + ', '.join(ahead) if ahead else ''}")
        significant = [s for s, c in comparison["subsets"].items() if c["p_value"] < 0.05]
        lines.append(f"McNemar p < 0.05 in: {', '.join(significant) or 'no subset'}; over all items "
                     f"p = {comparison['overall']['p_value']:.4g}")
    return lines


def _speed(run: ModelRun, rows: list[Row], keep: list[int]) -> dict[str, Any]:
    """Items/s of this scoring against a plain pipeline() loop over the same texts, one at a time; and the largest
    difference of their scores on the items that were not cut."""
    texts = [[format_text(rows[i]["prompt"], answer, run.template, run.scorer.tokenizer)
              for answer in rows[i]["chosen"] + rows[i]["rejected"]] for i in keep]
    flat, seconds = run.scorer.pipeline_scores([t for item in texts for t in item])
    ours = [s for i in keep if not run.cut[i] for s in run.scores[i]]
    theirs, start = [], 0
    for i, item in zip(keep, texts):
        if not run.cut[i]:
            theirs += flat[start:start + len(item)]
        start += len(item)
    ours_rate, pipeline_rate = len(keep) / run.seconds, len(keep) / seconds
    return {"items": len(keep), "texts": len(flat), "items_per_second": ours_rate,
            "pipeline_items_per_second": pipeline_rate, "ratio": ours_rate / pipeline_rate, "layout": run.layout,
            "largest_difference": max((abs(a - b) for a, b in zip(ours, theirs)), default=None)}


def _check_pipeline(run: ModelRun, rows: list[Row], items: list[int]) -> None:
    """pipeline()'s scores of these items' texts against ours: an error over 1e-4 (RewardScorer.check_pipeline)."""
    texts = [format_text(rows[i]["prompt"], a, run.template, run.scorer.tokenizer)
             for i in items for a in rows[i]["chosen"] + rows[i]["rejected"]]
    worst = run.scorer.check_pipeline(texts, [s for i in items for s in run.scores[i]])
    print(f"pipeline() parity: {len(texts)} texts of {len(items)} items, largest difference {worst:.2e}")


def run_benchmark(scorers: list[RewardScorer], templates: list[str], rows: list[Row], args: argparse.Namespace,
                  skipped: dict[str, Any]) -> dict[str, Any]:
    """Score the items with each model, print the table and the notes, and write the JSON and the plot."""
    several: list[Any] = []
    if args.benchmark == "best_of_n":
        rows, several = _several_chosen(rows)
    else:
        rows = [r | {"chosen": [r["chosen"]], "rejected": [r["rejected"]]} for r in rows]
    if not rows:
        raise UserError(f"no items to score in {' '.join(args.data_path)}")
    runs = [score_run(scorer, template, rows, args) for scorer, template in zip(scorers, templates)]
    keep = [i for i in range(len(rows)) if all(run.scores[i] is not None for run in runs)]
    dropped = [rows[i]["id"] for i in sorted(set(range(len(rows))) - set(keep))]
    if not keep:
        raise UserError(f"no item fits --max_seq_len {args.max_seq_len}: raise it")
    results = [_model_results(args.benchmark, run, rows, keep) for run in runs]
    comparison = None
    if len(runs) == 2:
        right = [[verdict(run.scores[i]) == "right" for i in keep] for run in runs]
        comparison = compare([rows[i]["subset"] for i in keep], *right, [rows[i]["id"] for i in keep])
    print(f"{TITLES[args.benchmark]}: {len(keep)} items; ties within {TIE:g} count as wrong; "
          f"scored {runs[0].layout}")
    print("\n".join(table(args.benchmark, results, comparison)))
    for line in _notes(results, comparison, dropped, several, args.max_seq_len):
        print(line)
    section = {"name": args.benchmark, "tie_tolerance": TIE, "items": len(keep), "max_seq_len": args.max_seq_len,
               "left_out": {"several_chosen": several, "over_max_seq_len": dropped}, "models": results}
    if comparison:
        section["comparison"] = comparison
    if args.check_pipeline:
        _check_pipeline(runs[0], rows, [i for i in keep if not runs[0].cut[i]][:args.check_samples])
    if args.time_pipeline:
        section["speed"] = speed = _speed(runs[0], rows, keep)
        print(f"speed: {speed['items_per_second']:.1f} items/s ({runs[0].layout}) against "
              f"{speed['pipeline_items_per_second']:.1f} items/s for a pipeline() loop, one text at a time: "
              f"{speed['ratio']:.2f}x on {speed['items']} items ({speed['texts']} texts); "
              + ("every item was cut, so no scores compare" if speed["largest_difference"] is None else
                 f"largest score difference {speed['largest_difference']:.2e} on the items not cut"))
    _plot(results, args)
    if args.output:
        out = {"model": scorers[0].model_dir, "data_path": args.data_path, "template": templates[0],
               "skipped": skipped, "benchmark": section}
        Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
        print(f"results written to {args.output}")
    return section


def _plot(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    subsets = list(results[0]["subsets"])
    labels = [Path(r["model"]).name or r["model"] for r in results]
    if len(results) == 2:
        labels = [f"{who}: {label}" for who, label in zip("AB", labels)]
    path = subset_accuracy_bars(subsets, {label: [r["subsets"][s]["accuracy"] for s in subsets]
                                          for label, r in zip(labels, results)},
                                args.plot, f"{TITLES[args.benchmark]}: accuracy per subset")
    print(f"per-subset accuracies drawn in {path}")
