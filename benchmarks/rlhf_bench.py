"""Step 3's RLOO against TRL's RLOOTrainer, side by side in one run on one machine, three ways: ours (each prompt
computed once for its K answers, in generation and in every pass), ours with --no_shared_prompt (computed K times),
and trl.RLOOTrainer.

Every trainer gets the same OPT-shaped policy (random weights, then briefly fine-tuned by our step 1, untimed) and
reward model (random weights), the same tokenizer, the same HH helpful-base prompts formatted as step 2 formats
them (only prompts that fit --max_prompt_len whole, so none is cut), K answers per prompt, the same maximum new
tokens, prompts per step, optimizer steps, learning rate and KL weight, fp32 on CPU, no vLLM. Each runs in its own
process; its training loop is timed and its peak RSS measured. Afterwards every trained policy, and the starting
one, answers the same held-out prompts with the same seed, and the reward model scores the answers: the reward gain
shows that a speed-up did not come from learning less.

    .venv/bin/python benchmarks/rlhf_bench.py --out benchmarks/results/rlhf_latest.json
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers import OPTConfig, OPTForCausalLM, OPTForSequenceClassification, PreTrainedTokenizerBase

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_data as data  # noqa: E402
from reward_bench import (  # noqa: E402
    CHILD_FIGURES,
    HERE,
    HH_FILE,
    REPO,
    command_line,
    machine,
    require_trl,
    run_child,
    versions,
    warn_if_skewed,
    work_folder,
    write_jsonl,
    write_report,
)

from utils.data.formatting import format_prompt  # noqa: E402
from utils.models.loading import load_causal_lm, load_tokenizer  # noqa: E402
from utils.models.reward_model import load_trained_reward_model  # noqa: E402
from utils.objectives.rollout import encode_prompts, reward_scores, sample, sampling_config  # noqa: E402

STEP1 = REPO / "training" / "step1_supervised_finetuning" / "main.py"
STEP3 = REPO / "training" / "step3_rlhf_finetuning" / "main.py"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "rlhf_latest.json")
    parser.add_argument("--steps", type=int, default=24, help="Optimizer steps for every trainer. Default: %(default)s")
    parser.add_argument("--prompts_per_step", type=int, default=8, help="Default: %(default)s")
    parser.add_argument("--k", type=int, default=4, help="Answers per prompt. Default: %(default)s")
    parser.add_argument("--max_new_tokens", type=int, default=48, help="Default: %(default)s")
    parser.add_argument("--max_prompt_len", type=int, default=256, help="Longer prompts are not used. "
                                                                         "Default: %(default)s")
    parser.add_argument("--learning_rate", type=float, default=3e-4, help="Default: %(default)s")
    parser.add_argument("--kl_ctl", type=float, default=0.1, help="The KL weight (TRL's beta). Default: %(default)s")
    parser.add_argument("--hidden", type=int, default=256, help="Default: %(default)s")
    parser.add_argument("--layers", type=int, default=4, help="Default: %(default)s")
    parser.add_argument("--vocab", type=int, default=8000, help="Tokenizer size to train. Default: %(default)s")
    parser.add_argument("--eval_prompts", type=int, default=64, help="Held-out prompts for the reward gain.")
    parser.add_argument("--sft_pairs", type=int, default=1024,
                        help="HH pairs of other prompts whose chosen answers fine-tune the starting policy.")
    parser.add_argument("--eval_samples", type=int, default=4, help="Seeded answers per held-out prompt.")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="Torch threads, the same for all.")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--work_dir", type=Path, default=None, help="Keep the models, data and logs here.")
    return parser.parse_args()


def build_models(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The tokenizer, trained on HH texts, and a random-weight actor and reward model saved beside it, dropout off
    in both, as TRL turns it off. The reward model's head is scaled so that its scores of HH texts have a standard
    deviation of 1: enough for the reward, not the KL penalty, to lead the policy, as with a trained reward model."""
    pairs = data.load_pairs(HH_FILE, 0, args.seed)
    dirs = {"random_actor": work / "random_actor", "reward": work / "reward", "actor": work / "actor"}
    vocab = data.train_tokenizer([t for row in pairs.rows for t in data.texts(row)], dirs["random_actor"],
                                 args.vocab)
    tokenizer = load_tokenizer(str(dirs["random_actor"]), "end", append_eos=False)
    tokenizer.save_pretrained(dirs["reward"])
    shape = dict(vocab_size=vocab, hidden_size=args.hidden, word_embed_proj_dim=args.hidden, ffn_dim=4 * args.hidden,
                 num_hidden_layers=args.layers, num_attention_heads=max(1, args.hidden // 64),
                 max_position_embeddings=1024, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                 pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                 eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(args.seed)
    actor = OPTForCausalLM(OPTConfig(**shape))
    actor.save_pretrained(dirs["random_actor"])
    torch.manual_seed(args.seed + 1)
    reward = OPTForSequenceClassification(OPTConfig(**shape, num_labels=1)).eval()
    with torch.no_grad():  # a random head scores every text near 0; scaled, its scores spread as a trained one's do
        texts = [t for row in pairs.rows[:64] for t in data.texts(row)]
        batch = tokenizer(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
        reward.score.weight /= reward(**batch).logits.std()
    reward.save_pretrained(dirs["reward"])
    return {"pairs": pairs, "dirs": dirs, "tokenizer": tokenizer, "vocab": vocab,
            "parameters": sum(p.numel() for p in actor.parameters())}


def fine_tune_actor(rows: list[dict], dirs: dict[str, Path], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Step 1 on HH chosen answers whose prompts the benchmark does not use, untimed: a starting policy that writes
    words and ends its answers, so that RLOO has something to shape, as it would after a real SFT."""
    out = dirs["actor"]
    command = [sys.executable, str(HERE / "bench_child.py"), "ours", str(work / "sft.result.json"), "none", "--",
               str(STEP1), "--model_name_or_path", str(dirs["random_actor"]),
               "--data_path", str(write_jsonl(work / "sft.jsonl", rows)), "--data_split", "1,0,0",
               "--template", data.TEMPLATE, "--max_seq_len", str(args.max_prompt_len + args.max_new_tokens),
               "--per_device_train_batch_size", "16", "--num_train_epochs", "1", "--learning_rate", "2e-3",
               "--num_warmup_steps", "5", "--weight_decay", "0.0", "--dropout", "0.0", "--dtype", "fp32",
               "--zero_stage", "0", "--eval_interval", "0", "--eval_iters", "2", "--seed", str(args.seed),
               "--data_output_path", str(work / "data_cache"), "--output_dir", str(out)]
    run_child("sft", command, work, args.threads)
    evals = [line for line in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
             if line["split"] == "eval"]
    return {"perplexity_before": evals[0]["perplexity"], "perplexity": evals[-1]["perplexity"]}


def select_prompts(rows: list[dict], tokenizer: PreTrainedTokenizerBase, args: argparse.Namespace
                   ) -> tuple[list[dict], list[dict], list[dict], int]:
    """A seeded sample of distinct prompts that fit --max_prompt_len whole, split into train and held-out; the pairs
    of the other prompts, for the starting policy's fine-tuning; and how many prompts were over the length."""
    by_prompt: dict[str, dict] = {}
    for row in rows:
        by_prompt.setdefault(row["prompt"], row)
    fits = {prompt: len(tokenizer(format_prompt(prompt, data.TEMPLATE))["input_ids"]) <= args.max_prompt_len
            for prompt in by_prompt}
    fitting = [prompt for prompt, fit in fits.items() if fit]
    need = args.steps * args.prompts_per_step + args.eval_prompts
    if len(fitting) < need:
        raise SystemExit(f"error: only {len(fitting)} prompts fit --max_prompt_len {args.max_prompt_len}; {need} "
                         "are needed: lower --steps, --prompts_per_step or --eval_prompts")
    order = torch.randperm(len(fitting), generator=torch.Generator().manual_seed(args.seed)).tolist()
    used = [fitting[i] for i in order[:need]]
    n_train = args.steps * args.prompts_per_step
    rest = [row for prompt, row in by_prompt.items() if prompt not in set(used)][:args.sft_pairs]
    return ([{"prompt": p} for p in used[:n_train]], [{"prompt": p} for p in used[n_train:]], rest,
            len(fits) - len(fitting))


def run_ours(name: str, flags: list[str], dirs: dict[str, Path], files: dict[str, Path], args: argparse.Namespace,
             work: Path) -> dict[str, Any]:
    out_dir = work / name
    trainer_args = [str(STEP3), "--algo", "rloo", "--actor_model_name_or_path", str(dirs["actor"]),
                    "--critic_model_name_or_path", str(dirs["reward"]), "--data_path", str(files["train"]),
                    "--eval_data_path", str(files["held_out"]), "--data_split", "0,0,1", "--template", data.TEMPLATE,
                    "--num_generations", str(args.k),
                    "--per_device_generation_batch_size", str(args.prompts_per_step),
                    "--per_device_training_batch_size", str(args.prompts_per_step),
                    "--max_prompt_seq_len", str(args.max_prompt_len), "--max_answer_seq_len", str(args.max_new_tokens),
                    "--actor_learning_rate", str(args.learning_rate), "--lr_scheduler_type", "constant",
                    "--num_warmup_steps", "0", "--actor_weight_decay", "0.0", "--actor_dropout", "0.0",
                    "--kl_ctl", str(args.kl_ctl), "--dtype", "fp32", "--actor_zero_stage", "0",
                    "--num_train_epochs", "1", "--eval_interval", "0", "--eval_iters", "1",
                    "--per_device_eval_batch_size", "8", "--seed", str(args.seed),
                    "--data_output_path", str(work / "data_cache"), "--output_dir", str(out_dir), *flags]
    command = [sys.executable, str(HERE / "bench_child.py"), "ours", str(work / f"{name}.result.json"), "none",
               "--", *trainer_args]
    result, wall = run_child(name, command, work, args.threads)
    lines = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    train = [line for line in lines if line["split"] == "train"]
    split = {part: sum(line[f"{key}_s"] for line in train)
             for part, key in (("generate", "generate"), ("score", "score"), ("no_grad_log_probs", "reference"))}
    return {"command": shlex.join(["python", *trainer_args]), "flags": flags, "wall_s": round(wall, 1),
            "train_s": train[-1]["elapsed_s"], "steps": train[-1]["step"], "split_s": split,
            "generated_tokens": round(sum(line["generated_tokens_per_s"] * line["generate_s"] for line in train)),
            "policy_dir": str(out_dir), **{key: result[key] for key in CHILD_FIGURES}}


def run_trl(prompts: list[dict], dirs: dict[str, Path], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    spec = {"prompts": [format_prompt(row["prompt"], data.TEMPLATE) for row in prompts],
            "raw_prompts": [row["prompt"] for row in prompts], "template": data.TEMPLATE,
            "actor_dir": str(dirs["actor"]), "reward_dir": str(dirs["reward"]), "output_dir": str(work / "trl"),
            "k": args.k, "prompts_per_step": args.prompts_per_step, "max_new_tokens": args.max_new_tokens,
            "steps": args.steps, "learning_rate": args.learning_rate, "kl_ctl": args.kl_ctl, "clip_reward_value": 5.0,
            "seed": args.seed}
    spec_file = work / "trl.spec.json"
    spec_file.write_text(json.dumps(spec))
    command = [sys.executable, str(HERE / "bench_child.py"), "trl_rloo", str(work / "trl.result.json"), str(spec_file)]
    result, wall = run_child("trl", command, work, args.threads)
    return {"settings": result["settings"], "wall_s": round(wall, 1), "train_s": result["train_s"],
            "steps": result["steps"], "split_s": result["split_s"], "generated_tokens": result["generated_tokens"],
            "policy_dir": spec["output_dir"], **{key: result[key] for key in CHILD_FIGURES}}


@torch.no_grad()
def held_out_rewards(policy_dir: str, tokenizer: PreTrainedTokenizerBase, reward: tuple, prompts: list[dict],
                     args: argparse.Namespace) -> list[float]:
    """Each held-out prompt's mean reward over --eval_samples seeded answers of this policy."""
    model = load_causal_lm(policy_dir, tokenizer, 0.0, False).eval()
    ids, mask, _ = encode_prompts([format_prompt(row["prompt"], data.TEMPLATE) for row in prompts], tokenizer,
                                  args.max_prompt_len)
    rollout = sample(model, tokenizer, ids, mask, args.eval_samples, sampling_config(tokenizer, args.max_new_tokens,
                                                                                     1.0), args.seed)
    scores = reward_scores(reward[0], reward[1], prompts, rollout, args.eval_samples, data.TEMPLATE)
    return scores.view(len(prompts), args.eval_samples).mean(dim=1).tolist()


def reward_gains(runs: dict[str, dict], start_dir: Path, tokenizer: PreTrainedTokenizerBase, reward_dir: Path,
                 prompts: list[dict], args: argparse.Namespace) -> dict[str, Any]:
    """The mean held-out reward of the starting policy, and each trained policy's gain over it with the standard
    error of the per-prompt differences (the same prompts and seed, so the differences pair up)."""
    torch.set_num_threads(args.threads)
    reward = load_trained_reward_model(str(reward_dir))[:2]
    before = held_out_rewards(str(start_dir), tokenizer, reward, prompts, args)
    gains = {}
    for name, run in runs.items():
        diff = [a - b for a, b in zip(held_out_rewards(run["policy_dir"], tokenizer, reward, prompts, args), before)]
        gains[name] = {"gain": round(statistics.mean(diff), 4),
                       "standard_error": round(statistics.stdev(diff) / len(diff) ** 0.5, 4)}
    ours, trl = gains["ours"], gains["trl"]
    apart = (ours["gain"] - trl["gain"]) / max((ours["standard_error"] ** 2 + trl["standard_error"] ** 2) ** 0.5, 1e-9)
    return {"reward_before": round(statistics.mean(before), 4), "gains": gains,
            "ours_minus_trl_in_standard_errors": round(apart, 2)}


def add_rates(run: dict[str, Any], prompts: int) -> dict[str, Any]:
    seconds = run["train_s"]
    split = dict(run["split_s"])
    split["rest"] = max(0.0, seconds - sum(split.values()))
    return run | {"train_s": round(seconds, 2), "prompts_per_s": round(prompts / seconds, 3),
                  "generated_tokens_per_s": round(run["generated_tokens"] / seconds, 1),
                  "generation_tokens_per_s": round(run["generated_tokens"] / max(split["generate"], 1e-9), 1),
                  "split_share": {part: round(s / seconds, 3) for part, s in split.items()}}


def print_table(runs: dict[str, dict[str, Any]], gains: dict[str, Any]) -> None:
    print(f"{'trainer':<12}{'steps':>6}{'train s':>9}{'prompts/s':>11}{'gen tok/s':>11}{'generate':>10}"
          f"{'score':>7}{'no-grad':>9}{'rest':>7}{'peak RSS MB':>13}{'reward gain':>17}{'ours vs':>9}")
    ours = runs["ours"]["prompts_per_s"]
    for name, run in runs.items():
        share, gain = run["split_share"], gains["gains"][name]
        ratio = "" if name == "ours" else f"{ours / run['prompts_per_s']:.2f}x"
        print(f"{name:<12}{run['steps']:>6}{run['train_s']:>9.1f}{run['prompts_per_s']:>11.2f}"
              f"{run['generated_tokens_per_s']:>11.0f}{share['generate']:>10.0%}{share['score']:>7.0%}"
              f"{share['no_grad_log_probs']:>9.0%}{share['rest']:>7.0%}{run['peak_rss_mb']:>13,.0f}"
              f"{gain['gain']:>+10.3f} ±{gain['standard_error']:.3f}{ratio:>9}")


def main() -> None:
    args = parse_args()
    trl_version = require_trl()
    started = time.perf_counter()
    with work_folder(args.work_dir, "rlhf_bench_") as work:
        built = build_models(work, args)
        train, held_out, sft_rows, over = select_prompts(built["pairs"].rows, built["tokenizer"], args)
        files = {"train": write_jsonl(work / "prompts.jsonl", train),
                 "held_out": write_jsonl(work / "held_out.jsonl", held_out)}
        print(f"data: {built['pairs'].source}, {len(train)} training and {len(held_out)} held-out prompts "
              f"({over} over --max_prompt_len {args.max_prompt_len} not used); vocab {built['vocab']}; "
              f"{built['parameters']:,} parameters")
        sft = fine_tune_actor(sft_rows, built["dirs"], args, work)
        print(f"starting policy: step 1 on {len(sft_rows)} other pairs' chosen answers, held-out perplexity "
              f"{sft['perplexity_before']:.0f} -> {sft['perplexity']:.1f}")
        runs = {"ours": run_ours("ours", [], built["dirs"], files, args, work),
                "unshared": run_ours("unshared", ["--no_shared_prompt"], built["dirs"], files, args, work),
                "trl": run_trl(train, built["dirs"], args, work)}
        gains = reward_gains(runs, built["dirs"]["actor"], built["tokenizer"], built["dirs"]["reward"], held_out,
                             args)
    runs = {name: add_rates(run, len(train)) for name, run in runs.items()}
    warn_if_skewed(runs, args.steps)
    print()
    print_table(runs, gains)
    ours = runs["ours"]["prompts_per_s"]
    report = {
        "speedup_vs_trl_rloo": round(ours / runs["trl"]["prompts_per_s"], 3),
        "speedup_vs_unshared": round(ours / runs["unshared"]["prompts_per_s"], 3),
        "reward_gain": gains, "data": built["pairs"].source, "command": command_line(),
        "settings": {key: getattr(args, key) for key in ("steps", "prompts_per_step", "k", "max_new_tokens",
                                                         "max_prompt_len", "learning_rate", "kl_ctl", "seed",
                                                         "eval_prompts", "eval_samples")} | {"dtype": "fp32"},
        "prompts": {"train": len(train), "held_out": len(held_out), "over_max_prompt_len_not_used": over},
        "starting_policy": {"sft_pairs": len(sft_rows), "perplexity_before": sft["perplexity_before"],
                            "perplexity_after": sft["perplexity"]},
        "model": {"architecture": "OPTForCausalLM and OPTForSequenceClassification, random weights",
                  "parameters": built["parameters"], "hidden": args.hidden, "layers": args.layers,
                  "vocab_size": built["vocab"]},
        "trainers": runs, "machine": machine(args.threads), "versions": versions(trl_version),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    write_report(report, args.out, work)
    print(f"\nours vs TRL's RLOOTrainer: {report['speedup_vs_trl_rloo']}x; vs ours unshared: "
          f"{report['speedup_vs_unshared']}x; reward gains {gains['ours_minus_trl_in_standard_errors']} standard "
          f"errors apart (ours - TRL's); whole run {report['wall_s']:.0f} s; written to {args.out}")


if __name__ == "__main__":
    main()
