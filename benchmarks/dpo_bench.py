"""Step 3's DPO against TRL's DPOTrainer, side by side in one run on one machine, three ways: ours (each pair one row
that computes the shared prompt once, in the policy's pass and in the reference's), ours with --no_shared_prompt
(chosen and rejected as two sequences), and trl.DPOTrainer.

Every trainer gets the same random-weight OPT causal LM (saved once; the reference is a frozen copy of it), the same
tokenizer, the same HH helpful-base pairs formatted as our data pipeline formats them (only pairs that fit
--max_seq_len whole, so none is cut), in the same batches and order, the same optimizer steps, learning rate, beta
and sigmoid loss, fp32 on CPU. Each runs in its own process; its training loop is timed and its peak RSS measured.
The same objective on the same batches gives the same loss curve: both are reported, as a check that the speed-up
does not come from computing something else.

    .venv/bin/python benchmarks/dpo_bench.py --out benchmarks/results/dpo_latest.json [--steps N]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_data as data  # noqa: E402
from bench_counts import pair_key  # noqa: E402
from reward_bench import (  # noqa: E402
    CHILD_FIGURES,
    GPT2_VOCAB,
    HERE,
    HH_FILE,
    REPO,
    build_model,
    command_line,
    machine,
    require_trl,
    run_child,
    train_metrics,
    versions,
    warn_if_skewed,
    work_folder,
    write_jsonl,
    write_report,
)

from utils.data.encoding import encode_preferences  # noqa: E402
from utils.data.formatting import format_prompt  # noqa: E402
from utils.models.loading import load_tokenizer  # noqa: E402

STEP3 = REPO / "training" / "step3_rlhf_finetuning" / "main.py"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "dpo_latest.json")
    parser.add_argument("--steps", type=int, default=32, help="Optimizer steps for every trainer. Default: %(default)s")
    parser.add_argument("--batch_pairs", type=int, default=8, help="Pairs per optimizer step. Default: %(default)s")
    parser.add_argument("--max_seq_len", type=int, default=512, help="Default: %(default)s")
    parser.add_argument("--eval_pairs", type=int, default=16, help="Our trainer's (untimed) eval set.")
    parser.add_argument("--learning_rate", type=float, default=1e-5, help="Default: %(default)s")
    parser.add_argument("--beta", type=float, default=0.1, help="Default: %(default)s")
    parser.add_argument("--precompute_ref_log_probs", action="store_true",
                        help="Both trainers compute the reference's log-probs before training (untimed) instead of "
                             "running the reference on every batch.")
    parser.add_argument("--hidden", type=int, default=224, help="reward_bench's first shape. Default: %(default)s")
    parser.add_argument("--layers", type=int, default=4, help="Default: %(default)s")
    parser.add_argument("--heads", type=int, default=4, help="Default: %(default)s")
    parser.add_argument("--curve_every", type=int, default=8, help="Loss curve points reported. Default: %(default)s")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="Torch threads, the same for all.")
    parser.add_argument("--data_file", type=Path, default=HH_FILE,
                        help="HH-RLHF transcripts (jsonl, optionally .gz), or `synthetic` for seeded synthetic pairs.")
    parser.add_argument("--synthetic_pairs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--work_dir", type=Path, default=None, help="Keep the models, data and logs here.")
    return parser.parse_args()


def prepare(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The tokenizer and model, as reward_bench builds them (a causal LM here), and a seeded sample of pairs that fit
    --max_seq_len whole, written for our trainer; each pair also as our DPO encodes it (ids and answer starts)."""
    pairs = data.load_pairs(args.data_file, args.synthetic_pairs, args.seed)
    model_dir = work / "model"
    vocab = data.train_tokenizer([text for row in pairs.rows for text in data.texts(row)], model_dir, GPT2_VOCAB)
    params = build_model(model_dir, vocab, args, causal_lm=True)
    n_train = args.steps * args.batch_pairs
    train, evals, overlength = data.select(data.encode(pairs.rows, data.trainer_tokenizer(model_dir)), n_train,
                                           args.eval_pairs, args.max_seq_len, args.seed)
    tokenizer = load_tokenizer(str(model_dir), "end", append_eos=False)  # as step 3 loads it
    encoded, _ = encode_preferences([p.row for p in train], tokenizer, data.TEMPLATE, args.max_seq_len, "drop")
    return {"pairs": pairs, "train": train, "encoded": {pair_key(e["chosen"], e["rejected"]): e for e in encoded},
            "overlength": overlength, "vocab": vocab, "params": params, "pad_id": tokenizer.pad_token_id,
            "files": {"model": model_dir, "train": write_jsonl(work / "train.jsonl", [p.row for p in train]),
                      "eval": write_jsonl(work / "eval.jsonl", [p.row for p in evals])}}


def run_ours(name: str, flags: list[str], prep: dict[str, Any], args: argparse.Namespace, work: Path
             ) -> dict[str, Any]:
    out_dir = work / name
    files = prep["files"]
    trainer_args = [str(STEP3), "--algo", "dpo", "--actor_model_name_or_path", str(files["model"]),
                    "--data_path", str(files["train"]), "--eval_data_path", str(files["eval"]),
                    "--data_split", "0,1,0", "--template", data.TEMPLATE, "--max_seq_len", str(args.max_seq_len),
                    "--dtype", "fp32", "--actor_zero_stage", "0",
                    "--per_device_training_batch_size", str(args.batch_pairs),
                    "--per_device_eval_batch_size", str(args.eval_pairs),
                    "--actor_learning_rate", str(args.learning_rate), "--lr_scheduler_type", "constant",
                    "--num_warmup_steps", "0", "--actor_weight_decay", "0.0", "--actor_dropout", "0.0",
                    "--beta", str(args.beta), "--dpo_loss", "sigmoid", "--num_train_epochs", "1",
                    "--eval_interval", "0", "--eval_iters", "1", "--seed", str(args.seed),
                    "--data_output_path", str(work / "data_cache"), "--output_dir", str(out_dir), *flags]
    command = [sys.executable, str(HERE / "bench_child.py"), "ours", str(work / f"{name}.result.json"),
               str(prep["pad_id"]), "--", *trainer_args]
    result, wall = run_child(name, command, work, args.threads)
    lines = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    losses = {line["step"]: line["loss"] for line in lines if line["split"] == "train"}
    return {"command": shlex.join(["python", *trainer_args]), "flags": flags, "wall_s": round(wall, 1),
            **train_metrics(out_dir), "pad_fraction_from": "metrics.jsonl", "losses": losses,
            "collate_counts": result["collate_counts"], "pair_order": result["pair_order"],
            **{key: result[key] for key in CHILD_FIGURES}}


def trl_rows(prep: dict[str, Any], order: list[str]) -> list[dict[str, str]]:
    """TRL's prompt-completion rows, in the order our trainer read the pairs: the prompt as our pipeline writes it,
    and each answer as the rest of the text it writes (the same strings, split where our encoder splits them)."""
    by_key = {pair_key(p.chosen, p.rejected): p.row for p in prep["train"]}
    rows = []
    for key in order:
        row = by_key[key]
        prompt = format_prompt(row["prompt"], data.TEMPLATE)
        chosen, rejected = data.texts(row)
        rows.append({"prompt": prompt, "chosen": chosen[len(prompt):], "rejected": rejected[len(prompt):]})
    return rows


def run_trl(prep: dict[str, Any], order: list[str], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """TRL on the same strings in the same order; its token ids and answer starts are checked against ours."""
    spec = {"rows": trl_rows(prep, order), "model_dir": str(prep["files"]["model"]), "output_dir": str(work / "trl"),
            "pad_id": prep["pad_id"], "batch_pairs": args.batch_pairs, "steps": args.steps,
            "learning_rate": args.learning_rate, "beta": args.beta, "max_seq_len": args.max_seq_len,
            "precompute": args.precompute_ref_log_probs, "seed": args.seed}
    spec_file = work / "trl.spec.json"
    spec_file.write_text(json.dumps(spec))
    command = [sys.executable, str(HERE / "bench_child.py"), "trl_dpo", str(work / "trl.result.json"), str(spec_file)]
    result, wall = run_child("trl", command, work, args.threads)
    ours = [prep["encoded"].get(key) for key in result["pair_keys"]]
    starts = zip(ours, result["answer_starts"])
    same_starts = sum(e is not None and e["starts"] == [start, start] for e, start in starts)
    counts = result["collate_counts"]
    return {"settings": result["settings"], "wall_s": round(wall, 1), "train_s": result["train_s"],
            "steps": result["steps"], "tokens": counts["tokens"], "positions": counts["positions"],
            "pad_fraction_from": "collate counter", "losses": {int(k): v for k, v in result["losses"].items()},
            "pairs_after_max_length_filter": result["pairs_after_filter"],
            "token_ids_identical_to_ours": f"{sum(e is not None for e in ours)}/{len(order)}",
            "answer_starts_identical_to_ours": f"{same_starts}/{len(order)}",
            "batch_order_identical_to_ours": result["pair_keys"] == order,
            **{key: result[key] for key in CHILD_FIGURES}}


def add_rates(run: dict[str, Any], pairs: int, every: int) -> dict[str, Any]:
    """pairs/s and the pad fraction; the loss curve at every `every`-th step and the last (the full one stays in
    the logs)."""
    seconds, losses = run["train_s"], run.pop("losses")
    run.pop("pair_order", None)
    last = max(losses)
    curve = {step: round(loss, 6) for step, loss in sorted(losses.items()) if step == 1 or step % every == 0}
    return run | {"train_s": round(seconds, 2), "pairs_per_s": round(pairs / seconds, 3),
                  "pad_fraction": round(1 - run["tokens"] / run["positions"], 4), "loss_curve": curve,
                  "final_loss": round(losses[last], 6)}


def print_table(runs: dict[str, dict[str, Any]]) -> None:
    print(f"{'trainer':<12}{'steps':>6}{'train s':>9}{'pairs/s':>9}{'pad':>8}{'positions':>11}{'peak RSS MB':>13}"
          f"{'other cores':>13}{'final loss':>12}{'ours vs':>9}")
    ours = runs["ours"]["pairs_per_s"]
    for name, run in runs.items():
        ratio = "" if name == "ours" else f"{ours / run['pairs_per_s']:.2f}x"
        print(f"{name:<12}{run['steps']:>6}{run['train_s']:>9.1f}{run['pairs_per_s']:>9.2f}{run['pad_fraction']:>8.1%}"
              f"{run['positions']:>11,}{run['peak_rss_mb']:>13,.0f}{run['other_work_cores']:>13.2f}"
              f"{run['final_loss']:>12.6f}{ratio:>9}")
    print("loss at step " + ", ".join(map(str, runs["ours"]["loss_curve"])))
    for name, run in runs.items():
        print(f"  {name:<10}" + ", ".join(f"{loss:.6f}" for loss in run["loss_curve"].values()))


def loss_gap(runs: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The largest gap between TRL's loss curve and each of ours, over the reported steps."""
    trl = runs["trl"]["loss_curve"]
    return {name: round(max(abs(run["loss_curve"][step] - trl[step]) for step in trl), 6)
            for name, run in runs.items() if name != "trl"}


def main() -> None:
    args = parse_args()
    trl_version = require_trl()
    started = time.perf_counter()
    precompute = ["--precompute_ref_log_probs"] if args.precompute_ref_log_probs else []
    with work_folder(args.work_dir, "dpo_bench_") as work:
        prep = prepare(args, work)
        n_train = len(prep["train"])
        print(f"data: {prep['pairs'].source}, {len(prep['pairs'].rows)} pairs, {n_train} trained; vocab "
              f"{prep['vocab']}; {prep['params']:,} parameters")
        runs = {"ours": run_ours("ours", precompute, prep, args, work)}
        runs["unshared"] = run_ours("unshared", ["--no_shared_prompt", *precompute], prep, args, work)
        runs["trl"] = run_trl(prep, runs["ours"]["pair_order"], args, work)
    runs = {name: add_rates(run, n_train, args.curve_every) for name, run in runs.items()}
    warn_if_skewed(runs, args.steps)
    print()
    print_table(runs)
    ours = runs["ours"]["pairs_per_s"]
    stats = data.token_stats(prep["train"])
    report = {
        "speedup_vs_trl_dpo": round(ours / runs["trl"]["pairs_per_s"], 3),
        "speedup_vs_unshared": round(ours / runs["unshared"]["pairs_per_s"], 3),
        "unshared_vs_trl_dpo": round(runs["unshared"]["pairs_per_s"] / runs["trl"]["pairs_per_s"], 3),
        "pad_fraction": runs["ours"]["pad_fraction"], "largest_loss_gap_to_trl": loss_gap(runs),
        "data": prep["pairs"].source, "command": command_line(),
        "settings": {key: getattr(args, key) for key in ("steps", "batch_pairs", "max_seq_len", "learning_rate",
                                                         "beta", "precompute_ref_log_probs", "seed", "threads")}
        | {"pairs_trained": n_train, "loss": "sigmoid", "dtype": "fp32", "lr_scheduler": "constant",
           "adam_betas": [0.9, 0.95], "weight_decay": 0.0, "max_grad_norm": 1.0,
           "reference": "precomputed before training (untimed) by both" if args.precompute_ref_log_probs
           else "a frozen copy of the starting model, run on every batch by both"},
        "data_detail": {"pairs_read": len(prep["pairs"].rows), "skipped_bad_rows": prep["pairs"].skipped_bad,
                        "skipped_identical_answers": prep["pairs"].skipped_identical,
                        "skipped_over_max_seq_len": prep["overlength"], "eval_pairs": args.eval_pairs,
                        "note": "only pairs that fit max_seq_len whole are used, so no trainer cuts or drops any"},
        "tokens": stats,
        "model": {"architecture": "OPTForCausalLM, random weights", "parameters": prep["params"],
                  "hidden": args.hidden, "layers": args.layers, "heads": args.heads, "ffn": 4 * args.hidden,
                  "vocab_size": prep["vocab"], "init_seed": args.seed},
        "trainers": runs, "machine": machine(args.threads), "versions": versions(trl_version),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    write_report(report, args.out, work)
    print(f"\nours vs TRL's DPOTrainer: {report['speedup_vs_trl_dpo']}x; vs ours unshared: "
          f"{report['speedup_vs_unshared']}x; largest loss gap to TRL {report['largest_loss_gap_to_trl']}; "
          f"whole run {report['wall_s']:.0f} s; written to {args.out}")


if __name__ == "__main__":
    main()
