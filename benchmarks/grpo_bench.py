"""Step 3's GRPO against TRL's GRPOTrainer, side by side in one run on one machine, on a task whose answers can be
checked, three ways: ours (each prompt computed once for its K answers, in generation and in every pass), ours with
--no_shared_prompt (computed K times), and trl.GRPOTrainer.

Every trainer gets the same starting policy (a random-weight OPT-shaped model fine-tuned by our step 1, untimed, on
the synthetic data's arithmetic questions, half of them answered right and half rudely, evasively or in loops as the
demo's step-1 data is: it answers some sums right and dodges others, which GRPO can teach it not to do), the same
built-in arithmetic problems (utils.data.synthetic_math) as the same formatted prompts, the same reward (our
`math_answer`: 1 for the right final number, else 0; with our `overlong` penalty added if asked), K answers per
prompt, the same maximum new tokens, temperature, prompts per step, optimizer steps, learning rate and schedule,
and GRPO settings (beta 0 unless --beta, loss_type dapo, scale_rewards group, epsilon 0.2), fp32 on CPU, no vLLM.
Each runs in its own process; its training loop is timed and its peak RSS measured. Afterwards the starting policy
and every trained one answer the same held-out problems, none of which any trainer (or step 1) saw, by one
evaluation function: one seeded sample per problem at the training temperature, and the greedy answer. The
accuracy gain shows that a speed-up did not come from learning less.

With --actor, every trainer starts from that pretrained model instead (nothing is built or fine-tuned), and
--template chat writes the prompts with its own chat template; --trainers picks the columns (`make
bench-grpo-smollm2` runs ours and TRL's on SmolLM2-135M-Instruct).

    .venv/bin/python benchmarks/grpo_bench.py --out benchmarks/results/grpo_latest.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reward_bench import (  # noqa: E402
    CHILD_FIGURES,
    HERE,
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

from utils.data.formatting import TEMPLATES, format_prompt  # noqa: E402
from utils.data.synthetic import generate_sft_rows  # noqa: E402
from utils.data.synthetic_math import train_and_held_out  # noqa: E402
from utils.rewards.builtin import default_overlong_buffer  # noqa: E402

STEP1 = REPO / "training" / "step1_supervised_finetuning" / "main.py"
STEP3 = REPO / "training" / "step3_rlhf_finetuning" / "main.py"
TRAINERS = ("ours", "unshared", "trl")
REWARDS = ("math_answer", "overlong")
SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine")  # transformers' names, which both trainers take
BARE_SUM = re.compile(r"(What is|How much is|Can you work out) \d (plus|minus|times) \d\?")  # synthetic's sums
GRPO = {"loss_type": "dapo", "scale_rewards": "group"}  # TRL 1.16's defaults, and ours
MODES = ("sampled", "greedy")
SE_METHOD = ("accuracy = right / problems; standard_error of a gain (after - before, or ours - TRL's) = "
             "sqrt(p1 (1 - p1) / n + p2 (1 - p2) / n), the two accuracies' binomial variances added as if "
             "independent; paired_standard_error uses that the problems are the same: sqrt(b + c - (b - c)^2 / n) / n "
             "with b and c the problems right only after and only before")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "grpo_latest.json")
    parser.add_argument("--actor", type=Path, default=None,
                        help="Start every trainer from this causal LM (a folder with its tokenizer) instead of the "
                             "tiny policy the harness builds and fine-tunes; the --hidden, --layers, --heads and "
                             "--sft_* flags then do nothing.")
    parser.add_argument("--template", choices=sorted(TEMPLATES), default="dschat",
                        help="How every prompt is written (utils.data.formatting.format_prompt), for every trainer and "
                             "the held-out evaluation; chat (the model's chat template) needs --actor. "
                             "Default: %(default)s")
    parser.add_argument("--trainers", nargs="+", choices=TRAINERS, default=list(TRAINERS),
                        help="Which to run: ours, ours with --no_shared_prompt (unshared), TRL's GRPOTrainer. "
                             "Default: all three")
    parser.add_argument("--steps", type=int, default=48, help="Optimizer steps for every trainer. Default: %(default)s")
    parser.add_argument("--prompts_per_step", type=int, default=8, help="Default: %(default)s")
    parser.add_argument("--k", type=int, default=8, help="Answers per prompt. Default: %(default)s")
    parser.add_argument("--max_new_tokens", type=int, default=24, help="Default: %(default)s")
    parser.add_argument("--max_prompt_len", type=int, default=64, help="Every prompt must fit whole (checked). "
                                                                        "Default: %(default)s")
    parser.add_argument("--learning_rate", type=float, default=1e-4, help="Default: %(default)s")
    parser.add_argument("--lr_scheduler_type", choices=SCHEDULES, default="constant", help="Default: %(default)s")
    parser.add_argument("--warmup_steps", type=int, default=0, help="Default: %(default)s")
    parser.add_argument("--beta", type=float, default=0.0,
                        help="The KL penalty's weight in the loss: ours --kl_ctl, TRL's beta. Default: %(default)s")
    parser.add_argument("--reward_funcs", nargs="+", choices=REWARDS, default=["math_answer"],
                        help="Our built-in rewards, summed; math_answer is required (the held-out accuracy is "
                             "its). Default: math_answer")
    parser.add_argument("--overlong_buffer", type=int, default=None,
                        help="overlong's ramp, in tokens before --max_new_tokens. Default: a quarter of "
                             "--max_new_tokens, as ours")
    parser.add_argument("--temperature", type=float, default=1.0, help="Default: %(default)s")
    parser.add_argument("--epsilon", type=float, default=0.2, help="The ratio clip, both sides. Default: %(default)s")
    parser.add_argument("--hidden", type=int, default=256, help="Default: %(default)s")
    parser.add_argument("--layers", type=int, default=4, help="Default: %(default)s")
    parser.add_argument("--heads", type=int, default=4, help="Default: %(default)s")
    parser.add_argument("--sft_rows", type=int, default=2400,
                        help="Synthetic arithmetic questions and answers for step 1. Default: %(default)s")
    parser.add_argument("--sft_flawed_share", type=float, default=0.5,
                        help="The share of them answered rudely, evasively or in loops. Default: %(default)s")
    parser.add_argument("--sft_epochs", type=int, default=6, help="Default: %(default)s")
    parser.add_argument("--sft_learning_rate", type=float, default=1e-3, help="Default: %(default)s")
    parser.add_argument("--eval_prompts", type=int, default=400, help="Held-out problems. Default: %(default)s")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="Torch threads, the same for all.")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--work_dir", type=Path, default=None, help="Keep the models, data and logs here.")
    return checked(parser.parse_args(argv))


def checked(args: argparse.Namespace) -> argparse.Namespace:
    """Refuse flags that cannot go together, before anything runs; the overlong buffer made explicit, so that both
    trainers get the same one."""
    if args.template == "chat" and args.actor is None:
        raise SystemExit("error: --template chat needs --actor: the tiny policy the harness builds has no chat "
                         "template")
    if args.actor is not None and not (args.actor / "config.json").is_file():
        raise SystemExit(f"error: --actor {args.actor}: no config.json there (give a folder with a model and its "
                         "tokenizer)")
    if "math_answer" not in args.reward_funcs or len(set(args.reward_funcs)) < len(args.reward_funcs):
        raise SystemExit("error: --reward_funcs must hold math_answer, and each function once")
    if "overlong" in args.reward_funcs:
        if args.overlong_buffer is None:
            args.overlong_buffer = default_overlong_buffer(args.max_new_tokens)
        if not 1 <= args.overlong_buffer <= args.max_new_tokens:
            raise SystemExit(f"error: --overlong_buffer {args.overlong_buffer} must lie between 1 and "
                             f"--max_new_tokens {args.max_new_tokens}")
    elif args.overlong_buffer is not None:
        raise SystemExit("error: --overlong_buffer is overlong's: add overlong to --reward_funcs")
    args.trainers = [name for name in TRAINERS if name in args.trainers]
    return args


def split_problems(args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    """steps x prompts_per_step training problems, then --eval_prompts distinct held-out ones that repeat no
    training problem (synthetic_math's own rule, with a held-out set of the size asked for)."""
    train, held_out = train_and_held_out(args.steps * args.prompts_per_step, args.eval_prompts, args.seed)
    if len(held_out) < args.eval_prompts:
        raise SystemExit(f"error: only {len(held_out)} distinct held-out problems; lower --eval_prompts")
    return train, held_out


def sft_rows(held_out: list[dict], args: argparse.Namespace) -> tuple[list[dict], int]:
    """The demo's step-1 rows (utils.data.synthetic.generate_sft_rows) that ask a bare sum ("What is 3 plus 5?"),
    answered right ("The answer is 8.", "3 plus 5 equals 8." ...) or, --sft_flawed_share of them, rudely, evasively
    or in a loop; none of them a held-out problem. Also returns how many were left out as held-out."""
    held = {row["prompt"] for row in held_out}
    rows, left_out = [], 0
    for row in generate_sft_rows(8 * args.sft_rows, args.seed, args.sft_flawed_share):
        if BARE_SUM.fullmatch(row["prompt"]):
            if row["prompt"] in held:
                left_out += 1
            elif len(rows) < args.sft_rows:
                rows.append({"prompt": row["prompt"], "chosen": row["chosen"]})
    if len(rows) < args.sft_rows:
        raise SystemExit(f"error: only {len(rows)} synthetic arithmetic rows; lower --sft_rows")
    return rows, left_out


def describe(model_dir: Path) -> dict[str, Any]:
    """What the JSON records of a starting policy: its class, size and the name its config carries, if any."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = model.config
    name = json.loads((model_dir / "config.json").read_text()).get("_model_name_or_path")
    return {"name": name or model_dir.name, "architecture": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()), "vocab_size": config.vocab_size,
            "layers": config.num_hidden_layers, "hidden": config.hidden_size}


def build_policy(work: Path, held_out: list[dict], args: argparse.Namespace) -> dict[str, Any]:
    """A random-weight OPT-shaped model and its tokenizer (a byte-level BPE trained on the synthetic texts), then
    step 1 on arithmetic questions (sft_rows), untimed: the starting policy of every trainer."""
    from utils.models.tiny import build_tiny_model

    random_dir, actor_dir = work / "random_actor", work / "actor"
    build_tiny_model(random_dir, "opt", args.hidden, args.layers, args.heads, seed=args.seed)
    rows, left_out = sft_rows(held_out, args)
    command = [sys.executable, str(HERE / "bench_child.py"), "ours", str(work / "sft.result.json"), "none", "--",
               str(STEP1), "--model_name_or_path", str(random_dir),
               "--data_path", str(write_jsonl(work / "sft.jsonl", rows)), "--data_split", "1,0,0",
               "--template", args.template, "--max_seq_len", "64", "--per_device_train_batch_size", "16",
               "--num_train_epochs", str(args.sft_epochs), "--learning_rate", str(args.sft_learning_rate),
               "--num_warmup_steps", "5", "--weight_decay", "0.0", "--dropout", "0.0", "--dtype", "fp32",
               "--zero_stage", "0", "--eval_interval", "0", "--eval_iters", "2", "--seed", str(args.seed),
               "--data_output_path", str(work / "data_cache"), "--output_dir", str(actor_dir)]
    _, wall = run_child("sft", command, work, args.threads)
    return {"dir": actor_dir, "sft_rows": len(rows), "sft_rows_left_out_as_held_out": left_out,
            "sft_wall_s": round(wall, 1)}


def formatted(rows: list[dict], template: str, tokenizer: Any) -> list[str]:
    """Each problem written as every trainer and the evaluation get it."""
    return [format_prompt(row["prompt"], template, tokenizer) for row in rows]


def check_prompts(prompts: list[str], tokenizer: Any, max_len: int) -> list[list[int]]:
    """Our token ids of each formatted prompt; every one must fit --max_prompt_len whole, as our trainer would
    otherwise cut it and TRL would not."""
    ids = [tokenizer(text)["input_ids"] for text in prompts]
    longest = max(map(len, ids))
    if longest > max_len:
        raise SystemExit(f"error: a prompt has {longest} tokens, over --max_prompt_len {max_len}")
    return ids


def run_ours(name: str, flags: list[str], actor_dir: Path, files: dict[str, Path], args: argparse.Namespace,
             work: Path) -> dict[str, Any]:
    out_dir = work / name
    overlong = [] if args.overlong_buffer is None else ["--overlong_buffer", str(args.overlong_buffer)]
    trainer_args = [str(STEP3), "--algo", "grpo", "--reward_funcs", *args.reward_funcs, *overlong,
                    "--actor_model_name_or_path", str(actor_dir), "--data_path", str(files["train"]),
                    "--eval_data_path", str(files["held_out"]), "--data_split", "0,0,1", "--template", args.template,
                    "--num_generations", str(args.k),
                    "--per_device_generation_batch_size", str(args.prompts_per_step),
                    "--per_device_training_batch_size", str(args.prompts_per_step),
                    "--max_prompt_seq_len", str(args.max_prompt_len), "--max_answer_seq_len", str(args.max_new_tokens),
                    "--temperature", str(args.temperature), "--kl_ctl", str(args.beta),
                    "--loss_type", GRPO["loss_type"], "--scale_rewards", GRPO["scale_rewards"],
                    "--cliprange", str(args.epsilon), "--cliprange_high", str(args.epsilon),
                    "--actor_learning_rate", str(args.learning_rate), "--lr_scheduler_type", args.lr_scheduler_type,
                    "--num_warmup_steps", str(args.warmup_steps), "--actor_weight_decay", "0.0",
                    "--actor_dropout", "0.0",
                    "--dtype", "fp32", "--actor_zero_stage", "0", "--num_train_epochs", "1",
                    "--eval_interval", "0", "--eval_iters", "1", "--per_device_eval_batch_size", "8",
                    "--seed", str(args.seed), "--data_output_path", str(work / "data_cache"),
                    "--output_dir", str(out_dir), *flags]
    command = [sys.executable, str(HERE / "bench_child.py"), "ours", str(work / f"{name}.result.json"), "none",
               "--", *trainer_args]
    result, wall = run_child(name, command, work, args.threads)
    train = [line for line in map(json.loads, (out_dir / "metrics.jsonl").read_text().splitlines())
             if line["split"] == "train"]
    return {"command": shlex.join(["python", *trainer_args]), "flags": flags, "wall_s": round(wall, 1),
            "train_s": train[-1]["elapsed_s"], "steps": train[-1]["step"],
            "split_s": {part: sum(line[f"{part}_s"] for line in train) for part in ("generate", "score")},
            "generated_tokens": round(sum(line["generated_tokens_per_s"] * line["generate_s"] for line in train)),
            "train_rewards": [line["reward_math_answer"] for line in train],
            "policy_dir": str(out_dir), **{key: result[key] for key in CHILD_FIGURES}}


def trl_spec(prompts: list[str], train: list[dict], actor_dir: Path, args: argparse.Namespace, output_dir: Path
             ) -> dict[str, Any]:
    """What bench_trl_grpo.py trains from: every setting the harness holds equal between ours and TRL's."""
    return {"prompts": prompts, "answers": [row["answer"] for row in train], "actor_dir": str(actor_dir),
            "output_dir": str(output_dir), "k": args.k, "prompts_per_step": args.prompts_per_step,
            "max_new_tokens": args.max_new_tokens, "steps": args.steps, "learning_rate": args.learning_rate,
            "lr_scheduler_type": args.lr_scheduler_type, "warmup_steps": args.warmup_steps, "beta": args.beta,
            "temperature": args.temperature, "epsilon": args.epsilon, "seed": args.seed,
            "reward_funcs": args.reward_funcs, "overlong_buffer": args.overlong_buffer, **GRPO}


def run_trl(prompts: list[str], train: list[dict], ours: dict[str, Any], actor_dir: Path, args: argparse.Namespace,
            work: Path) -> dict[str, Any]:
    """TRL on the same formatted prompts; its token ids of them, and the ids its generation stops at, are checked
    against ours (`ours`: our "prompt_ids" and "eos_token_ids")."""
    spec = trl_spec(prompts, train, actor_dir, args, work / "trl")
    spec_file = work / "trl.spec.json"
    spec_file.write_text(json.dumps(spec))
    command = [sys.executable, str(HERE / "bench_child.py"), "trl_grpo", str(work / "trl.result.json"),
               str(spec_file)]
    result, wall = run_child("trl", command, work, args.threads)
    same = sum(a == b for a, b in zip(result["prompt_ids"], ours["prompt_ids"]))
    if same < len(train):
        print(f"warning: TRL's token ids of {len(train) - same} of the {len(train)} prompts differ from ours")
    if result["eos_token_ids"] != ours["eos_token_ids"]:
        print(f"warning: TRL's generation stops at the ids {result['eos_token_ids']}, ours at "
              f"{ours['eos_token_ids']}")
    return {"settings": result["settings"], "wall_s": round(wall, 1), "train_s": result["train_s"],
            "steps": result["steps"], "split_s": result["split_s"], "generated_tokens": result["generated_tokens"],
            "train_rewards": result["train_rewards"], "prompt_ids_identical_to_ours": f"{same}/{len(train)}",
            "eos_token_ids": result["eos_token_ids"], "ours_eos_token_ids": ours["eos_token_ids"],
            "policy_dir": spec["output_dir"], **{key: result[key] for key in CHILD_FIGURES}}


def held_out_answers(policy_dir: str, tokenizer: Any, rows: list[dict], args: argparse.Namespace
                     ) -> dict[str, Any]:
    """This policy's answers to every held-out problem, one seeded sample at the training temperature and the greedy
    one, each scored 1 or 0 by math_answer; the same function, seed and settings for every policy."""
    import torch  # imported here, with deepspeed through rollout: the figures below need neither

    from utils.models.loading import load_causal_lm
    from utils.objectives.rollout import encode_prompts, sample, sampling_config
    from utils.rewards.builtin import math_answer

    torch.set_num_threads(args.threads)
    model = load_causal_lm(policy_dir, tokenizer, 0.0, False).eval()
    ids, mask, _ = encode_prompts(formatted(rows, args.template, tokenizer), tokenizer, args.max_prompt_len)
    out: dict[str, Any] = {}
    with torch.no_grad():
        for mode in MODES:
            config = sampling_config(tokenizer, args.max_new_tokens, args.temperature, greedy=mode == "greedy")
            rollout = sample(model, tokenizer, ids, mask, 1, config, args.seed)
            out[mode] = [int(score) for score in math_answer([row["prompt"] for row in rows], rollout.answers,
                                                             answer=[row["answer"] for row in rows])]
            out[f"{mode}_answer_tokens"] = round(rollout.lengths.float().mean().item(), 2)
    return out


def gain(before: list[int], after: list[int]) -> dict[str, Any]:
    """The accuracy gain on the same problems, with its standard errors (SE_METHOD)."""
    n = len(before)
    p1, p0 = sum(after) / n, sum(before) / n
    only_after = sum(a and not b for a, b in zip(after, before))
    only_before = sum(b and not a for a, b in zip(after, before))
    return {"right_before": sum(before), "right_after": sum(after), "accuracy_before": round(p0, 4),
            "accuracy_after": round(p1, 4), "gain": round(p1 - p0, 4),
            "standard_error": round(math.sqrt(p1 * (1 - p1) / n + p0 * (1 - p0) / n), 4),
            "right_after_only": only_after, "right_before_only": only_before,
            "paired_standard_error": round(math.sqrt(only_after + only_before - (only_after - only_before) ** 2 / n)
                                           / n, 4)}


def accuracy_report(before: dict[str, Any], after: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The starting policy's accuracy, each trainer's gain over it, and how far ours and TRL's end apart (when both
    ran)."""
    n = len(before["sampled"])
    report: dict[str, Any] = {"problems": n, "method": SE_METHOD,
                              "before": {mode: {"right": sum(before[mode]), "accuracy": round(sum(before[mode]) / n, 4),
                                                "answer_tokens": before[f"{mode}_answer_tokens"]} for mode in MODES},
                              "trainers": {name: {mode: gain(before[mode], answers[mode]) | {
                                  "answer_tokens": answers[f"{mode}_answer_tokens"]} for mode in MODES}
                                  for name, answers in after.items()}}
    if not {"ours", "trl"} <= set(after):
        return report
    apart = {}
    for mode in MODES:
        ours, trl = report["trainers"]["ours"][mode], report["trainers"]["trl"][mode]
        se = math.sqrt(sum(p * (1 - p) / n for p in (ours["accuracy_after"], trl["accuracy_after"])))
        apart[mode] = round((ours["accuracy_after"] - trl["accuracy_after"]) / max(se, 1e-9), 2)
    report["ours_minus_trl_in_standard_errors"] = apart
    return report


def add_rates(run: dict[str, Any], prompts: int) -> dict[str, Any]:
    """Prompts and generated tokens per second of the training loop, and its split, the rest included."""
    seconds = run["train_s"]
    split = dict(run["split_s"])
    split["rest"] = max(0.0, seconds - sum(split.values()))
    rewards = run["train_rewards"]
    quarter = max(1, len(rewards) // 4)
    return run | {"train_s": round(seconds, 2), "prompts_per_s": round(prompts / seconds, 3),
                  "generated_tokens_per_s": round(run["generated_tokens"] / seconds, 1),
                  "split_s": {part: round(s, 2) for part, s in split.items()},
                  "split_share": {part: round(s / seconds, 3) for part, s in split.items()},
                  "train_reward_first_quarter": round(sum(rewards[:quarter]) / quarter, 4),
                  "train_reward_last_quarter": round(sum(rewards[-quarter:]) / quarter, 4)}


SPEEDUPS = {"speedup_vs_trl_grpo": ("ours", "trl"), "unshared_speedup_vs_trl_grpo": ("unshared", "trl"),
            "speedup_vs_unshared": ("ours", "unshared")}


def speedups(runs: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Prompts/s of one column over another's, for each pair in SPEEDUPS whose two columns ran."""
    return {key: round(runs[faster]["prompts_per_s"] / runs[slower]["prompts_per_s"], 3)
            for key, (faster, slower) in SPEEDUPS.items() if faster in runs and slower in runs}


def print_table(runs: dict[str, dict[str, Any]], accuracy: dict[str, Any]) -> None:
    before = accuracy["before"]
    print(f"held-out accuracy before: sampled {before['sampled']['accuracy']:.3f}, "
          f"greedy {before['greedy']['accuracy']:.3f} ({accuracy['problems']} problems)")
    print(f"{'trainer':<10}{'steps':>6}{'train s':>9}{'prompts/s':>11}{'generate':>10}{'score':>7}{'rest':>7}"
          f"{'peak RSS MB':>13}{'sampled gain':>17}{'greedy gain':>17}{'vs TRL' if 'trl' in runs else '':>8}")
    for name, run in runs.items():
        share, acc = run["split_share"], accuracy["trainers"][name]
        print(f"{name:<10}{run['steps']:>6}{run['train_s']:>9.1f}{run['prompts_per_s']:>11.2f}"
              f"{share['generate']:>10.0%}{share['score']:>7.0%}{share['rest']:>7.0%}{run['peak_rss_mb']:>13,.0f}"
              + "".join(f"{acc[m]['gain']:>+10.3f} ±{acc[m]['standard_error']:.3f}" for m in MODES)
              + (f"{run['prompts_per_s'] / runs['trl']['prompts_per_s']:>7.2f}x" if "trl" in runs else ""))


def starting_policy(work: Path, held_out: list[dict], args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The folder every trainer starts from, and what the report records of it; a line on it is printed."""
    if args.actor is not None:
        model = describe(args.actor) | {"source": f"--actor {args.actor}"}
        print(f"starting policy: {model['name']} ({model['architecture']}, {model['parameters']:,} parameters), "
              f"from --actor {args.actor}")
        return args.actor.resolve(), {"model": model}
    policy = build_policy(work, held_out, args)
    print(f"starting policy: step 1 on {policy['sft_rows']} arithmetic questions, {args.sft_flawed_share:.0%} of "
          f"them answered with a flaw, {args.sft_epochs} epochs ({policy['sft_wall_s']:.0f} s)")
    built = {key: policy[key] for key in ("sft_rows", "sft_rows_left_out_as_held_out", "sft_wall_s")}
    return policy["dir"], {
        "starting_policy": built | {key: getattr(args, key) for key in ("sft_flawed_share", "sft_epochs",
                                                                          "sft_learning_rate")},
        "model": describe(policy["dir"]) | {"name": "tiny OPT (utils.models.tiny)", "heads": args.heads,
                                            "architecture": "OPTForCausalLM, random weights, then step 1"}}


def run_trainers(prompts: list[str], train: list[dict], ours: dict[str, Any], actor_dir: Path,
                 files: dict[str, Path], args: argparse.Namespace, work: Path) -> dict[str, dict[str, Any]]:
    """The --trainers, one after another, in TRAINERS' order."""
    runs = {}
    for name in args.trainers:
        if name == "trl":
            runs[name] = run_trl(prompts, train, ours, actor_dir, args, work)
        else:
            runs[name] = run_ours(name, ["--no_shared_prompt"] if name == "unshared" else [], actor_dir, files, args,
                                  work)
    return runs


def main() -> None:
    args = parse_args()
    trl_version = require_trl() if "trl" in args.trainers else "not run"
    started, load_start = time.perf_counter(), os.getloadavg()
    from utils.models.loading import load_tokenizer

    with work_folder(args.work_dir, "grpo_bench_") as work:
        train, held_out = split_problems(args)
        files = {"train": write_jsonl(work / "prompts.jsonl", train),
                 "held_out": write_jsonl(work / "held_out.jsonl", held_out)}
        actor_dir, policy = starting_policy(work, held_out, args)
        tokenizer = load_tokenizer(str(actor_dir), "end", append_eos=False)
        prompts = formatted(train, args.template, tokenizer)
        ours = {"prompt_ids": check_prompts(prompts, tokenizer, args.max_prompt_len),
                "eos_token_ids": [tokenizer.eos_token_id]}
        check_prompts(formatted(held_out, args.template, tokenizer), tokenizer, args.max_prompt_len)
        print(f"data: {len(train)} training and {len(held_out)} held-out problems, --template {args.template}")
        runs = run_trainers(prompts, train, ours, actor_dir, files, args, work)
        before = held_out_answers(str(actor_dir), tokenizer, held_out, args)
        accuracy = accuracy_report(before, {name: held_out_answers(run["policy_dir"], tokenizer, held_out, args)
                                            for name, run in runs.items()})
        runs = {name: add_rates(run, len(train)) for name, run in runs.items()}
        warn_if_skewed(runs, args.steps)
        print()
        print_table(runs, accuracy)
        speed = speedups(runs)
        report = speed | {
            "accuracy": accuracy, "command": command_line(),
            "settings": {key: getattr(args, key) for key in ("trainers", "steps", "prompts_per_step", "k",
                                                             "max_new_tokens", "max_prompt_len", "learning_rate",
                                                             "lr_scheduler_type", "warmup_steps", "temperature",
                                                             "beta", "epsilon", "seed", "eval_prompts", "template",
                                                             "overlong_buffer")}
            | GRPO | {"dtype": "fp32", "reward_funcs": [f"utils.rewards.builtin.{name}" for name in args.reward_funcs]},
            "problems": {"train": len(train), "held_out": len(held_out), "source": "utils.data.synthetic_math, seed "
                         f"{args.seed}; held-out problems repeat no training problem"},
            **policy,
            "trainers": runs,
            "machine": machine(args.threads) | {"load_average_at_start": [round(x, 2) for x in load_start],
                                                "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
            "versions": versions(trl_version), "wall_s": round(time.perf_counter() - started, 1),
        }
        write_report(report, args.out, work)
    figures = [f"{key} {value}x" for key, value in speed.items()]
    if "ours_minus_trl_in_standard_errors" in accuracy:
        figures.append(f"after-training accuracies ours - TRL's: {accuracy['ours_minus_trl_in_standard_errors']} "
                       "standard errors")
    print("\n" + "; ".join([*figures, f"whole run {report['wall_s']:.0f} s", f"written to {args.out}"]))


if __name__ == "__main__":
    main()
