"""Reward-model training throughput, side by side: our step 2, trl.RewardTrainer, and DeepSpeed-Chat's pad-to-max.

One run on one machine: the same tiny OPT-shaped model (identical random weights), the same tokenizer, the same
formatted pairs, the same global batch and number of optimizer steps, fp32 on CPU. Each trainer runs in its own
process; its training loop is timed and its peak RSS measured. Figures are per pair and per useful token (the shared
prompt counted once, then each answer), so a trainer is not credited for computing padding or the prompt twice.

    .venv/bin/python benchmarks/reward_bench.py --out benchmarks/results/latest.json [--steps N]
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
STEP2 = REPO / "training" / "step2_reward_model_finetuning" / "main.py"
HH_FILE = REPO / "benchmarks" / "data" / "helpful-base-test.jsonl.gz"  # Anthropic HH-RLHF helpful-base test, MIT
# DeepSpeed-Chat's batching: chosen and rejected as two rows each, padded to --max_seq_len, in plain shuffled order.
PAD_TO_MAX_FLAGS = ["--no_shared_prompt", "--length_grouping", "off", "--pad_to_max_len"]
TRL_VERSION = "1.16.0"
CHILD_FIGURES = ("peak_rss_mb", "torch_threads", "other_work_cores")
GPT2_VOCAB = 50257
WORK = "$WORK"
PATHS = (f"commands run from the repository's root; {WORK} is the harness's work folder of models, data and logs "
         "(temporary, unless --work_dir)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.json")
    parser.add_argument("--steps", type=int, default=64,
                        help="Optimizer steps for every trainer; 64 is one length-grouping mega-batch of ours.")
    parser.add_argument("--batch_pairs", type=int, default=8, help="Pairs per optimizer step (global batch).")
    parser.add_argument("--max_seq_len", type=int, default=512)
    parser.add_argument("--eval_pairs", type=int, default=16, help="Our trainer's (untimed) eval set.")
    parser.add_argument("--learning_rate", type=float, default=1e-5)
    parser.add_argument("--hidden", type=int, default=224, help="About 10M parameters with a ~32k vocabulary.")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="Torch threads, the same for all.")
    parser.add_argument("--data_file", type=Path, default=HH_FILE,
                        help="HH-RLHF transcripts (jsonl, optionally .gz), or `synthetic` for seeded synthetic pairs. "
                             "Default: the HH-RLHF helpful-base test split shipped in benchmarks/data/.")
    parser.add_argument("--synthetic_pairs", type=int, default=2000)
    parser.add_argument("--no_trl_group_by_length", action="store_true",
                        help="Skip the extra column: TRL with train_sampling_strategy=group_by_length.")
    parser.add_argument("--second_shape", default="512x8",
                        help="HIDDENxLAYERS of a second model, run after the first, where the linear layers rather "
                             "than the embedding table hold most parameters; `none` skips it. Default: %(default)s")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--work_dir", type=Path, default=None, help="Keep the models, data and logs here.")
    return parser.parse_args()


def require_trl() -> str:
    """TRL is an optional extra: say how to get it in one line instead of a traceback."""
    if importlib.util.find_spec("trl") is None:
        raise SystemExit("error: trl is not installed: pip install -r benchmarks/requirements.txt (or run make bench)")
    version = importlib.metadata.version("trl")
    if version != TRL_VERSION:
        print(f"warning: trl {version} is installed; this benchmark is written for trl {TRL_VERSION}")
    return version


def build_model(out_dir: Path, vocab_size: int, args: argparse.Namespace, causal_lm: bool = False) -> int:
    """A random-weight OPT reward model (score head included, so every trainer starts from the same weights), or
    with `causal_lm` a policy of the same shape, saved beside the tokenizer; dropout off, as TRL turns it off.
    Returns its parameter count."""
    import torch
    from transformers import AutoTokenizer, OPTConfig, OPTForCausalLM, OPTForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    torch.manual_seed(args.seed)
    config = OPTConfig(vocab_size=vocab_size, hidden_size=args.hidden, word_embed_proj_dim=args.hidden,
                       ffn_dim=4 * args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
                       max_position_embeddings=max(512, args.max_seq_len), dropout=0.0, attention_dropout=0.0,
                       activation_dropout=0.0, layerdrop=0.0, num_labels=1, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = (OPTForCausalLM if causal_lm else OPTForSequenceClassification)(config)
    model.save_pretrained(out_dir)
    return sum(p.numel() for p in model.parameters())


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def child_env(threads: int) -> dict[str, str]:
    return os.environ | {"DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                         "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy, all cores together (Linux /proc/stat; 0 elsewhere)."""
    stat = Path("/proc/stat")
    if not stat.exists():
        return 0.0
    ticks = [int(x) for x in stat.read_text().split("\n", 1)[0].split()[1:9]]  # user ... steal
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_child(name: str, command: list[str], work: Path, threads: int) -> tuple[dict[str, Any], float]:
    """Run one trainer process with its output in a log; on failure show the log's end and stop.

    Also measures how many cores other work kept busy meanwhile: on a shared machine that skews the timings."""
    log = work / f"{name}.log"
    print(f"[{name}] running, log: {log}", flush=True)
    busy, own, start = machine_busy_s(), children_cpu_s(), time.perf_counter()
    with log.open("w") as handle:
        code = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT, env=child_env(threads), cwd=REPO)
    wall = time.perf_counter() - start
    other = max(0.0, (machine_busy_s() - busy) - (children_cpu_s() - own)) / wall
    if code != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise SystemExit(f"{tail}\nerror: {name} failed with exit status {code} (full log above: {log})")
    return json.loads((work / f"{name}.result.json").read_text()) | {"other_work_cores": round(other, 2)}, wall


def train_metrics(output_dir: Path) -> dict[str, Any]:
    """Loop seconds at the last step, the token counts and the mean MFU, from the trainer's metrics.jsonl."""
    lines = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    train = [line for line in lines if line["split"] == "train"]
    steady = train[1:] or train  # the first step carries one-off costs
    return {"train_s": train[-1]["elapsed_s"], "steps": train[-1]["step"],
            **{key: int(sum(line[key] for line in train)) for key in ("tokens", "positions")},
            "mfu": round(sum(line["mfu"] for line in steady) / len(steady), 4)}


def run_ours(name: str, flags: list[str], files: dict[str, Path], args: argparse.Namespace, pad_id: int,
             work: Path) -> dict[str, Any]:
    out_dir = work / name
    trainer_args = [str(STEP2), "--model_name_or_path", str(files["model"]), "--data_path", str(files["train"]),
                    "--eval_data_path", str(files["eval"]), "--data_split", "0,1,0", "--template", "dschat",
                    "--per_device_train_batch_size", str(args.batch_pairs), "--per_device_eval_batch_size",
                    str(args.eval_pairs), "--num_train_epochs", "1", "--max_seq_len", str(args.max_seq_len),
                    "--dtype", "fp32", "--zero_stage", "0", "--learning_rate", str(args.learning_rate),
                    "--eval_interval", "0", "--eval_iters", "1", "--seed", str(args.seed),
                    "--data_output_path", str(work / "data_cache"), "--output_dir", str(out_dir), *flags]
    command = [sys.executable, str(HERE / "bench_child.py"), "ours", str(work / f"{name}.result.json"), str(pad_id),
               "--", *trainer_args]
    result, wall = run_child(name, command, work, args.threads)
    return {"command": shlex.join(["python", *trainer_args]), "flags": flags, "wall_s": round(wall, 1),
            **train_metrics(out_dir), "pad_fraction_from": "metrics.jsonl",
            "collate_counts": result["collate_counts"],  # a cross-check of the logged counts
            **{key: result[key] for key in CHILD_FIGURES}}


def run_trl(name: str, grouped: bool, rows: list[dict[str, Any]], ours_ids: list[list[list[int]]],
            args: argparse.Namespace, model_dir: Path, pad_id: int, work: Path) -> dict[str, Any]:
    """TRL on the formatted texts; its token ids are checked against the ones our trainer gets."""
    spec = {"rows": rows, "model_dir": str(model_dir), "output_dir": str(work / name), "pad_id": pad_id,
            "batch_pairs": args.batch_pairs, "steps": args.steps, "learning_rate": args.learning_rate,
            "max_seq_len": args.max_seq_len, "seed": args.seed, "group_by_length": grouped}
    spec_file = work / f"{name}.spec.json"
    spec_file.write_text(json.dumps(spec))
    command = [sys.executable, str(HERE / "bench_child.py"), "trl", str(work / f"{name}.result.json"), str(spec_file)]
    result, wall = run_child(name, command, work, args.threads)
    same = sum(a == b for a, b in zip(result["token_ids"], ours_ids))
    counts = result["collate_counts"]
    return {"settings": result["settings"], "wall_s": round(wall, 1), "train_s": result["train_s"],
            "steps": result["steps"], "tokens": counts["tokens"], "positions": counts["positions"],
            "pad_fraction_from": "collate counter", "pairs_after_max_length_filter": result["pairs_after_filter"],
            "token_ids_identical_to_ours": f"{same}/{len(rows)}", **{key: result[key] for key in CHILD_FIGURES}}


def add_rates(run: dict[str, Any], pairs: int, useful: int) -> dict[str, Any]:
    seconds = run["train_s"]
    return run | {"train_s": round(seconds, 2), "pairs_per_s": round(pairs / seconds, 3),
                  "useful_tokens_per_s": round(useful / seconds, 1),
                  "pad_fraction": round(1 - run["tokens"] / run["positions"], 4)}


def print_table(runs: dict[str, dict[str, Any]]) -> None:
    header = f"{'trainer':<22}{'steps':>6}{'train s':>9}{'pairs/s':>9}{'useful tok/s':>14}{'pad':>8}" \
             f"{'positions':>11}{'peak RSS MB':>13}{'other cores':>13}{'ours vs':>9}"
    print(header)
    ours = runs["ours"]["pairs_per_s"]
    for name, run in runs.items():
        ratio = "" if name == "ours" else f"{ours / run['pairs_per_s']:.2f}x"
        print(f"{name:<22}{run['steps']:>6}{run['train_s']:>9.1f}{run['pairs_per_s']:>9.2f}"
              f"{run['useful_tokens_per_s']:>14,.0f}{run['pad_fraction']:>8.1%}{run['positions']:>11,}"
              f"{run['peak_rss_mb']:>13,.0f}{run['other_work_cores']:>13.2f}{ratio:>9}")


def machine(threads: int) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")), None) if cpuinfo.exists() else None
    return {"cpu_count": os.cpu_count(), "torch_threads": threads, "cpu_model": model,
            "platform": platform.platform(), "python": platform.python_version()}


def versions(trl_version: str) -> dict[str, str]:
    names = ("torch", "transformers", "deepspeed", "tokenizers", "accelerate", "datasets")
    return {name: importlib.metadata.version(name) for name in names} | {"trl": trl_version}


def warn_if_skewed(runs: dict[str, dict[str, Any]], steps: int) -> None:
    """Say when a trainer ran a different number of steps, or shared the machine with other work."""
    for name, run in runs.items():
        if run["steps"] != steps:
            print(f"warning: {name} ran {run['steps']} optimizer steps, not {steps}")
        if run["other_work_cores"] > 0.2:
            print(f"warning: other processes kept {run['other_work_cores']} cores busy while {name} ran: "
                  "its timing is skewed; rerun on an idle machine")


@contextlib.contextmanager
def work_folder(chosen: Path | None, prefix: str) -> Iterator[Path]:
    """--work_dir when given (kept afterwards), else a temporary folder removed at the end; an absolute path, which
    write_report finds in the report's strings."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        work = (chosen or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        yield work


def command_line() -> str:
    """How this harness was run, with `python` for whichever interpreter ran it."""
    return shlex.join(["python", str(Path(sys.argv[0]).resolve()), *sys.argv[1:]])


def portable(value: Any, work: Path) -> Any:
    """`value` with the paths in its strings as they read on any machine: the work folder as $WORK, and the
    repository's own files relative to its root."""
    if isinstance(value, dict):
        return {key: portable(item, work) for key, item in value.items()}
    if isinstance(value, list):
        return [portable(item, work) for item in value]
    if isinstance(value, str):
        return value.replace(str(work), WORK).replace(f"{REPO}{os.sep}", "")
    return value


def write_report(report: dict[str, Any], out: Path, work: Path) -> None:
    """The report as JSON, its commands run from the repository's root and its work folder named $WORK."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(portable(report, work) | {"paths": PATHS}, indent=2) + "\n")


def main() -> None:
    args = parse_args()
    trl_version = require_trl()
    started = time.perf_counter()
    with work_folder(args.work_dir, "reward_bench_") as work:
        report = benchmark(args, work, trl_version)
        if args.second_shape != "none":
            hidden, layers = map(int, args.second_shape.split("x"))
            print(f"\nsecond shape: {layers} layers of width {hidden}")
            (work / "second").mkdir(exist_ok=True)
            second = benchmark(argparse.Namespace(**vars(args) | {"hidden": hidden, "layers": layers,
                                                                  "heads": hidden // 64}), work / "second", trl_version)
            report["second_shape"] = {key: second[key] for key in ("speedup_vs_trl", "speedup_vs_trl_group_by_length",
                                                                   "speedup_vs_pad_to_max", "pad_fraction", "model",
                                                                   "trainers")}
    report["wall_s"] = round(time.perf_counter() - started, 1)
    write_report(report, args.out, work)
    for name, part in (("", report), ("second shape: ", report.get("second_shape"))):
        if part:
            grouped = part["speedup_vs_trl_group_by_length"]
            print(f"\n{name}ours vs TRL: {part['speedup_vs_trl']}x"
                  + (f" ({grouped}x vs its group_by_length)" if grouped else "")
                  + f", vs pad-to-max: {part['speedup_vs_pad_to_max']}x; our pad fraction {part['pad_fraction']:.1%}")
    print(f"whole run {report['wall_s']:.0f} s; written to {args.out}")


def benchmark(args: argparse.Namespace, work: Path, trl_version: str) -> dict[str, Any]:
    """Prepare the data, tokenizer and model once, run every trainer, and gather the report."""
    import bench_data as data

    pairs = data.load_pairs(args.data_file, args.synthetic_pairs, args.seed)
    model_dir = work / "model"
    vocab = data.train_tokenizer([text for row in pairs.rows for text in data.texts(row)], model_dir, GPT2_VOCAB)
    params = build_model(model_dir, vocab, args)
    tokenizer = data.trainer_tokenizer(model_dir)
    n_train = args.steps * args.batch_pairs
    train, evals, overlength = data.select(data.encode(pairs.rows, tokenizer), n_train, args.eval_pairs,
                                           args.max_seq_len, args.seed)
    files = {"model": model_dir, "train": write_jsonl(work / "train.jsonl", [p.row for p in train]),
             "eval": write_jsonl(work / "eval.jsonl", [p.row for p in evals])}
    stats = data.token_stats(train)
    print(f"data: {pairs.source}, {len(pairs.rows)} pairs, {n_train} trained; vocab {vocab}; {params:,} parameters")

    pad_id = tokenizer.pad_token_id
    # TRL's rows: the same formatted texts, and each pair's longer sequence for its length-grouped sampler
    trl_rows = [dict(zip(("chosen", "rejected"), data.texts(p.row)), length=max(len(p.chosen), len(p.rejected)))
                for p in train]
    trl = functools.partial(run_trl, rows=trl_rows, ours_ids=[[p.chosen, p.rejected] for p in train], args=args,
                            model_dir=model_dir, pad_id=pad_id, work=work)
    runs = {"ours": run_ours("ours", [], files, args, pad_id, work), "trl": trl("trl", False),
            "pad_to_max": run_ours("pad_to_max", PAD_TO_MAX_FLAGS, files, args, pad_id, work)}
    if not args.no_trl_group_by_length:
        runs["trl_group_by_length"] = trl("trl_group_by_length", True)
    runs = {name: add_rates(run, n_train, stats["useful_tokens_total"]) for name, run in runs.items()}
    warn_if_skewed(runs, args.steps)
    print()
    print_table(runs)

    def speedup(peer: str) -> float:
        return round(runs["ours"]["pairs_per_s"] / runs[peer]["pairs_per_s"], 3)

    return {
        "speedup_vs_trl": speedup("trl"), "speedup_vs_pad_to_max": speedup("pad_to_max"),
        "speedup_vs_trl_group_by_length": speedup("trl_group_by_length") if "trl_group_by_length" in runs else None,
        "pad_fraction": runs["ours"]["pad_fraction"], "data": pairs.source,
        "command": command_line(),
        "steps": args.steps, "batch_pairs": args.batch_pairs, "pairs_trained": n_train,
        "max_seq_len": args.max_seq_len, "learning_rate": args.learning_rate, "seed": args.seed, "dtype": "fp32",
        "data_detail": {"pairs_read": len(pairs.rows), "skipped_bad_rows": pairs.skipped_bad,
                        "skipped_identical_answers": pairs.skipped_identical,
                        "skipped_over_max_seq_len": overlength, "eval_pairs": len(evals),
                        "note": "only pairs that fit max_seq_len whole are used, so no trainer cuts or drops any"},
        "tokens": stats,
        "model": {"architecture": "OPTForSequenceClassification", "parameters": params, "hidden": args.hidden,
                  "layers": args.layers, "heads": args.heads, "ffn": 4 * args.hidden,
                  "vocab_size_target": GPT2_VOCAB, "vocab_size_realized": vocab, "init_seed": args.seed},
        "trainers": runs,
        "trl_notes": {
            "data_format": "standard (implicit prompt): chosen and rejected full texts, formatted by "
                           "utils.data.formatting.format_text exactly as our trainer formats them",
            "eos": "appends the EOS token as text to each string before tokenizing; the tokenizer's post-processor "
                   "adds the BOS, so TRL's ids equal ours (see token_ids_identical_to_ours)",
            "over_length": "RewardConfig.max_length drops pairs whose chosen or rejected ids exceed it; "
                           "it never truncates",
            "defaults_overridden": "bf16 (on by default: RewardConfig() itself raises on a CPU-only machine), "
                                   "gradient_checkpointing (on by default), learning_rate (1e-4 by default)",
            "group_by_length": "transformers 5 has no group_by_length argument: train_sampling_strategy="
                               "'group_by_length'. Its sampler looks for an input_ids column, which TRL's tokenized "
                               "rows lack (chosen_ids, rejected_ids), so it raises unless the dataset has a `length` "
                               "column kept with remove_unused_columns=False; here length = the longer of the pair",
        },
        "machine": machine(args.threads), "versions": versions(trl_version),
    }


if __name__ == "__main__":
    main()
