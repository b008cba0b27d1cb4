"""Test a reward model before trusting it in RLHF: score prompt-answer pairs, or evaluate preference pairs.

    python rw_eval.py --model_name_or_path DIR                          # built-in good and bad answers
    python rw_eval.py --model_name_or_path DIR --prompt P --answer A [--prompt P2 --answer A2 ...] [--output F]
    python rw_eval.py --model_name_or_path DIR --input rows.jsonl --output scores.json    # rows: prompt, answer
    python rw_eval.py --model_name_or_path DIR --data_path pairs.jsonl [--write_normalization] [--check_pipeline]
    python rw_eval.py --model_name_or_path DIR --data_path items.jsonl --benchmark rewardbench|best_of_n \
        [--compare_with OTHER_DIR] [--time_pipeline]                 # RewardBench's figures; best-of-N sets
    python rw_eval.py --model_name_or_path DIR --serve [--port 5000] [--host 127.0.0.1]    # a remote reward server

Texts are formatted with --template by the training formatter, so any Hugging Face sequence-classification reward
model directory works, not only ours. Rows are read, checked and skipped as training reads them, and every skip is
counted and reported: a line each on screen, and under "skipped" in the --output JSON.
"""
from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from utils.data.formatting import TEMPLATES, format_text
from utils.data.sources import BENCHMARK_FIELDS, SOURCES_HELP, Row
from utils.data.splits import DataSpec, column_map, load_eval_rows
from utils.errors import UserError, exit_on_error
from utils.flags import reading_flags

if TYPE_CHECKING:
    from utils.evaluation.scoring import RewardScorer

# A prompt, a good answer and a bad one: a trained reward model should score the good one higher.
EXAMPLES = [
    ("What is the capital of France?", "The capital of France is Paris.", "I'm not sure."),
    ("What is 3 plus 4?", "3 plus 4 is 7.", "3 plus 4 is 9."),
    ("How many legs does a spider have?", "A spider has eight legs.", "Figure it out yourself."),
    ("What color is snow?", "Snow is white.", "Snow snow snow snow snow."),
    ("Which planet is closest to the sun?", "Mercury is the closest planet to the sun.", "Bananas are yellow."),
    ("Can you help me with my homework?", "Of course. What is the question?", "No. Do it yourself, idiot."),
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="A reward model directory or hub name.")
    parser.add_argument("--tokenizer", help="For a DeepSpeed-Chat step-2 folder whose config.json names no base model: "
                                            "the tokenizer it trained with (e.g. facebook/opt-350m).")
    parser.add_argument("--prompt", action="append", default=[], help="A prompt; repeat, one per --answer.")
    parser.add_argument("--answer", action="append", default=[], help="The answer to the matching --prompt.")
    parser.add_argument("--input", help="A .jsonl file of rows with prompt and answer fields to score.")
    parser.add_argument("--output", help="Write the scores (ad hoc) or the evaluation (--data_path) here as JSON.")
    data = parser.add_argument_group("pairwise evaluation")
    data.add_argument("--data_path", nargs="*", default=[], help=SOURCES_HELP)
    reading_flags(data, eval_help="Default: the source's test or validation split, or else all of its rows.")
    data.add_argument("--plot", default=None,
                      help="With --data_path: the histogram of chosen and rejected scores (default: "
                           "reward_histogram.png), or with --benchmark the accuracy of each subset (default: "
                           "benchmark_accuracy.png).")
    data.add_argument("--top_k", type=int, default=5, help="How many highest and lowest scored texts to show.")
    data.add_argument("--write_normalization", action="store_true",
                      help="Store the fitted normalization constants in the model directory's config.json.")
    data.add_argument("--check_pipeline", action="store_true",
                      help="Re-score a sample through transformers.pipeline and fail on any difference over 1e-4.")
    data.add_argument("--check_samples", type=int, default=32, help="Texts re-scored by --check_pipeline.")
    bench = parser.add_argument_group("benchmarks (docs/rw_eval.md#benchmarks); --data_path holds the items")
    bench.add_argument("--benchmark", choices=["rewardbench", "best_of_n"],
                       help="rewardbench: prompt, chosen, rejected and subset fields; per-subset accuracy, "
                            "RewardBench's section scores and overall score. best_of_n: one chosen answer and a list "
                            "of rejected ones per prompt (RewardBench 2's layout); right when chosen beats them all.")
    bench.add_argument("--compare_with", help="A second reward model, scored on the same items: both accuracies, "
                                              "the items only one gets right, McNemar's p-value.")
    bench.add_argument("--compare_template", choices=sorted(TEMPLATES),
                       help="The --compare_with model's template. Default: --template.")
    bench.add_argument("--max_seq_len", type=int, default=512,
                       help="Longest tokenized text; a longer item's prompt is cut from the left, as step 2 cuts "
                            "it. Default: %(default)s")
    bench.add_argument("--overlength", choices=["truncate", "drop"], default="truncate",
                       help="Items over --max_seq_len: cut the prompt, or leave the item out. Either way they are "
                            "counted and named. Default: %(default)s")
    bench.add_argument("--no_shared_prompt", action="store_true",
                       help="Score each answer as a sequence of its own, not an item's answers in one row.")
    bench.add_argument("--time_pipeline", action="store_true",
                       help="Also score every item with a plain pipeline() loop, one text at a time, and report both "
                            "speeds in items/s and the largest score difference.")
    serving = parser.add_argument_group("serving (OpenRLHF's remote reward protocol, for step 3's --reward_url)")
    serving.add_argument("--serve", action="store_true",
                         help='Answer POST {"query": [texts], ...} on any path with {"rewards": [scores]}.')
    serving.add_argument("--port", type=int, default=5000, help="Default: %(default)s; 0 picks a free one.")
    serving.add_argument("--host", default="127.0.0.1",
                         help="Default: %(default)s, this machine only; 0.0.0.0 listens on every interface.")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="fp32")
    parser.add_argument("--device", default=None, help="Default: cuda when there is a GPU, else cpu.")
    return parser


def _read(spec: DataSpec) -> tuple[list[Row], dict[str, Any]]:
    """Rows as training reads them, each kind of skip printed on a line of its own, and the counts."""
    rows, report = load_eval_rows(spec)
    for line in report.skip_lines():
        print(line)
    return rows, {"bad_rows": report.bad_rows_skipped, "bad_row_kinds": report.bad_row_kinds,
                  "ties": report.ties_skipped, "identical_pairs": report.identical_pairs_skipped}


def _ad_hoc_rows(args: argparse.Namespace) -> list[tuple[str, str]]:
    rows = list(zip(args.prompt, args.answer))
    if args.input:
        read, _ = _read(DataSpec([args.input], fields=("prompt", "answer"), on_bad_row=args.on_bad_row))
        rows += [(r["prompt"], r["answer"]) for r in read]
    return rows


def _check_benchmark_flags(args: argparse.Namespace) -> None:
    """The benchmark flags' mistakes, before any model loads."""
    if args.benchmark is None:
        given = [flag for flag, value in (("--compare_with", args.compare_with),
                                          ("--compare_template", args.compare_template),
                                          ("--no_shared_prompt", args.no_shared_prompt),
                                          ("--time_pipeline", args.time_pipeline)) if value]
        if given:
            raise UserError(f"{', '.join(given)} go with --benchmark rewardbench or best_of_n")
        return
    if not args.data_path:
        raise UserError(f"--benchmark {args.benchmark} scores the items of --data_path: give it a file or dataset")
    if args.prompt or args.input or args.write_normalization:
        raise UserError("--benchmark scores the items of --data_path: drop --prompt, --input and "
                        "--write_normalization")
    if args.time_pipeline and args.dtype != "fp32":
        raise UserError("--time_pipeline compares with pipeline() in fp32: use --dtype fp32")


def _benchmark(args: argparse.Namespace, scorer: RewardScorer, device: str) -> None:
    from utils.evaluation.benchmark_report import run_benchmark
    from utils.evaluation.scoring import RewardScorer

    args.plot = args.plot or "benchmark_accuracy.png"
    spec = DataSpec(args.data_path, eval_split=args.eval_split, columns=column_map(args), on_bad_row=args.on_bad_row,
                    fields=BENCHMARK_FIELDS, answer_lists=("chosen", "rejected") if args.benchmark == "best_of_n"
                    else ())
    rows, skipped = _read(spec)
    scorers, templates = [scorer], [args.template]
    if args.compare_with:
        scorers.append(RewardScorer(args.compare_with, args.dtype, device))
        templates.append(args.compare_template or args.template)
    run_benchmark(scorers, templates, rows, args, skipped)


@exit_on_error
def main() -> None:
    args = _parser().parse_args()
    if len(args.prompt) != len(args.answer):
        raise UserError(f"got {len(args.prompt)} --prompt and {len(args.answer)} --answer: give one answer per prompt")
    if args.serve:
        given = {"--prompt": args.prompt, "--input": args.input, "--data_path": args.data_path, "--output": args.output,
                 "--check_pipeline": args.check_pipeline, "--write_normalization": args.write_normalization,
                 "--benchmark": args.benchmark}
        if any(given.values()):
            raise UserError(f"--serve scores the texts its clients send: drop "
                            f"{', '.join(flag for flag, value in given.items() if value)}")
    if args.check_pipeline and args.dtype != "fp32":
        raise UserError("--check_pipeline compares fp32 scores: use --dtype fp32")
    _check_benchmark_flags(args)
    import torch  # after the flags: --help and their mistakes answer at once

    from utils.evaluation.reward_report import NORMALIZATION_KEY, evaluate_pairs, print_scores
    from utils.evaluation.scoring import RewardScorer

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    scorer = RewardScorer(args.model_name_or_path, args.dtype, device, args.tokenizer)
    if scorer.converted and args.write_normalization:
        raise UserError("--write_normalization writes into the model's config.json: convert the DeepSpeed-Chat "
                        f"checkpoint first (python -m utils.models.dschat_convert {args.model_name_or_path} OUT_DIR), "
                        "then evaluate OUT_DIR")
    if args.serve:
        from utils.evaluation.reward_server import serve

        serve(scorer, args.host, args.port, args.batch_size)
        return
    if args.benchmark:
        _benchmark(args, scorer, device)
        return
    if args.data_path:
        args.plot = args.plot or "reward_histogram.png"
        spec = DataSpec(args.data_path, eval_split=args.eval_split, columns=column_map(args),
                        on_bad_row=args.on_bad_row)
        rows, skipped = _read(spec)
        evaluate_pairs(scorer, rows, args, skipped)
        return
    rows = _ad_hoc_rows(args) or [(p, a) for p, good, bad in EXAMPLES for a in (good, bad)]
    texts = [format_text(p, a, args.template, scorer.tokenizer) for p, a in rows]
    scores, _ = scorer.score(texts, args.batch_size)
    if args.check_pipeline:
        scorer.check_pipeline(texts[:args.check_samples], scores[:args.check_samples])
    print_scores(rows, scores, getattr(scorer.config, NORMALIZATION_KEY, None))
    if not (args.prompt or args.input):
        wins = [scores[i] > scores[i + 1] for i in range(0, len(scores), 2)]
        for (prompt, _, _), win in zip(EXAMPLES, wins):
            print(f"{'yes' if win else 'NO ':>4}  good > bad: {prompt}")
        print(f"good answer scored higher in {sum(wins)} of {len(EXAMPLES)} examples")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump([{"prompt": p, "answer": a, "score": s} for (p, a), s in zip(rows, scores)], handle, indent=2)


if __name__ == "__main__":
    main()
