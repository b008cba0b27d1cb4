"""Step 3's configuration mistakes, refused with one line before any model is loaded: a run that would fail after
minutes of loading, or quietly learn the wrong thing, is worse than no run."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from transformers import AutoConfig, AutoTokenizer

from utils.errors import UserError
from utils.models.dschat_convert import is_dschat_checkpoint
from utils.models.reward_model import NORMALIZATION_KEY, checked_reward_config

# DeepSpeed-Chat's step-3 flags with no counterpart here: accepted and ignored with a warning where they change
# nothing that is learned (speed knobs, an extra averaged copy, printing), refused where they would.
DSCHAT_IGNORED = {
    "enable_ema": "no EMA copy of the actor is kept; the exported actor is the trained one",
    "enable_mixed_precision_lora": "LoRA's frozen weights keep the training precision",
    "unpin_actor_parameters": "it tunes DeepSpeed's hybrid engine, which is not used (generation runs Hugging Face "
                              "generate)",
    "release_inference_cache": "it tunes DeepSpeed's hybrid engine, which is not used",
    "inference_tp_size": "it tunes DeepSpeed's hybrid engine, which is not used",
    "tp_gather_partition_size": "it tunes DeepSpeed's hybrid engine, which is not used",
    "print_answers": "every held-out answer goes to samples.jsonl instead",
    "print_answers_interval": "every held-out answer goes to samples.jsonl instead",
    "align_overflow": "an fp16 overflow skips the step on every process alike here",
    "preprocessing_num_workers": "prompts are read by the shared data pipeline",
}
DSCHAT_REFUSED = {
    "unsupervised_dataset_name": "the pretraining (PTX) loss mixed into step 3 is not implemented",
    "unsupervised_dataset_config_name": "the pretraining (PTX) loss mixed into step 3 is not implemented",
    "unsup_coef": "the pretraining (PTX) loss mixed into step 3 is not implemented",
    "enable_test_mode": "a run stops early with --num_train_epochs or a smaller --data_path here",
    "test_stop_step": "a run stops early with --num_train_epochs or a smaller --data_path here",
}


def check_flags(args: argparse.Namespace) -> None:
    for name, reason in DSCHAT_REFUSED.items():
        if getattr(args, name) is not None:
            raise UserError(f"--{name}: {reason}")
    ratios = args.algo in ("rloo", "ppo")  # the algorithms whose ratios and KL follow the sampling law
    if args.algo != "dpo" and not args.reward_model_name_or_path:
        raise UserError(f"--algo {args.algo} scores sampled answers with a reward model: pass "
                        "--critic_model_name_or_path (a step-2 output)")
    if args.algo in ("dpo", "online_dpo"):
        _check_dpo_flags(args)
    if args.algo == "online_dpo" and args.num_generations < 2:
        raise UserError(f"--num_generations {args.num_generations}: online DPO pairs the best and the worst of K "
                        "answers to a prompt, so it needs K >= 2")
    if args.algo == "rloo" and args.num_generations < 2:
        raise UserError(f"--num_generations {args.num_generations}: RLOO's baseline is the mean reward of the other "
                        "answers to the same prompt, so it needs K >= 2")
    if args.num_generations < 1:
        raise UserError("--num_generations must be at least 1")
    if args.temperature <= 0:
        raise UserError(f"--temperature {args.temperature}: sampling needs a temperature above 0")
    if ratios and (args.top_k or args.top_p < 1):
        raise UserError("--top_k and --top_p change the sampling law, so the log-ratio to the reference no longer "
                        "estimates the KL (it can go negative, and policies exploit that): RLOO and PPO sample "
                        "purely")
    if ratios and args.dropout:
        raise UserError(f"--actor_dropout {args.dropout}: with dropout the training forward no longer scores the "
                        "answers as they were sampled, and the KL to the reference is not 0 at the start; use 0")
    rollouts_train_whole = args.algo in ("rloo", "raft", "ppo")
    if rollouts_train_whole and args.per_device_train_batch_size != args.per_device_generation_batch_size:
        raise UserError(f"--per_device_training_batch_size {args.per_device_train_batch_size} and "
                        f"--per_device_generation_batch_size {args.per_device_generation_batch_size}: each rollout "
                        "trains as one micro-batch (PPO: one minibatch) here, so give both the same number of prompts")
    if args.algo == "ppo":
        if min(args.generation_batches, args.ppo_epochs) < 1:
            raise UserError("--generation_batches and --ppo_epochs must be at least 1")
        if not 0 <= args.lam <= 1 or not 0 <= args.gamma <= 1:
            raise UserError(f"--gamma {args.gamma} and --lam {args.lam} must lie between 0 and 1")
    elif args.generation_batches != 1 or args.ppo_epochs != 1:
        raise UserError(f"--generation_batches and --ppo_epochs: --algo {args.algo} takes them as 1 here (RLOO and "
                        "RAFT: one update per rollout, DeepSpeed-Chat's stable setting); leave both at 1, or use "
                        "--algo ppo")
    if min(args.max_prompt_seq_len, args.max_answer_seq_len, args.per_device_generation_batch_size) < 1:
        raise UserError("--max_prompt_seq_len, --max_answer_seq_len and --per_device_generation_batch_size must be "
                        "at least 1")


def _check_dpo_flags(args: argparse.Namespace) -> None:
    if args.beta <= 0:
        raise UserError(f"--beta {args.beta}: the implicit reward is beta * log(pi / pi_ref), so beta must be above 0")
    if not 0 <= args.label_smoothing < 0.5:
        raise UserError(f"--label_smoothing {args.label_smoothing}: the share of flipped labels lies in [0, 0.5)")
    if args.label_smoothing and args.dpo_loss == "ipo":
        raise UserError("--label_smoothing applies to the sigmoid loss; IPO has none")
    if args.precompute_ref_log_probs and args.algo != "dpo":
        raise UserError("--precompute_ref_log_probs: online DPO's reference changes every iteration, and computes its "
                        "log-probs once per iteration anyway; use it with --algo dpo")
    if args.algo == "dpo" and args.prompt_data_path:
        raise UserError("--prompt_data_path: --algo dpo trains on the preference pairs of --data_path, not on prompts")
    if min(args.num_iterations, args.prompts_per_iteration) < 0 or args.tie_threshold < 0:
        raise UserError("--num_iterations, --prompts_per_iteration and --tie_threshold must be 0 or more")


def flag_warnings(args: argparse.Namespace, argv: list[str]) -> list[str]:
    """What a DeepSpeed-Chat command line (argv) asks for that this run will not do, each said once before it
    starts."""
    out = [f"warning: --{name} is ignored: {reason}" for name, reason in DSCHAT_IGNORED.items()
           if getattr(args, name) is not None]
    if args.enable_hybrid_engine:
        out.append("warning: --enable_hybrid_engine is accepted, but generation uses Hugging Face generate")
    critic = [word.split("=")[0] for word in argv if word.startswith("--critic_")
              and not word.startswith("--critic_model_name_or_path")]
    if critic and args.algo != "ppo":
        out.append(f"warning: {', '.join(critic)} given, but --algo {args.algo} trains no critic; DeepSpeed-Chat's "
                   "algorithm is --algo ppo")
    return out


def critic_settings(args: argparse.Namespace) -> argparse.Namespace:
    """The flags the critic's engine reads under the shared names: the actor's, with the --critic_* values."""
    return argparse.Namespace(**vars(args) | {
        "learning_rate": args.critic_learning_rate, "weight_decay": args.critic_weight_decay,
        "zero_stage": args.zero_stage if args.critic_zero_stage is None else args.critic_zero_stage,
        "gradient_checkpointing": args.critic_gradient_checkpointing, "dropout": args.critic_dropout,
        "lora_dim": args.critic_lora_dim, "lora_module_name": args.critic_lora_module_name,
        "lora_learning_rate": args.critic_lora_learning_rate})


def _positions(config: object) -> int | None:
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def check_models(args: argparse.Namespace) -> dict[str, float] | None:
    """The actor and reward model's configs (no weights) against the flags; returns the normalization constants
    that --reward_normalization needs."""
    try:
        actor = AutoConfig.from_pretrained(args.model_name_or_path, trust_remote_code=args.trust_remote_code)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load the actor '{args.model_name_or_path}': {err}") from None
    if any("SequenceClassification" in a for a in actor.architectures or []):
        raise UserError(f"--actor_model_name_or_path '{args.model_name_or_path}' is a {actor.architectures[0]}: the "
                        "actor is a causal LM (a step-1 output); the reward model goes to --critic_model_name_or_path")
    budget = args.max_prompt_seq_len + args.max_answer_seq_len
    if _positions(actor) and budget > _positions(actor):
        raise UserError(f"--max_prompt_seq_len + --max_answer_seq_len = {budget} is over the actor's "
                        f"{_positions(actor)} positions")
    if args.algo == "dpo" and _positions(actor) and args.max_seq_len > _positions(actor):
        raise UserError(f"--max_seq_len {args.max_seq_len} is over the actor's {_positions(actor)} positions")
    if not args.reward_model_name_or_path:  # DPO without a reward model (check_flags refused the others)
        return None
    if is_dschat_checkpoint(args.reward_model_name_or_path):
        if args.algo == "ppo":
            raise UserError(f"'{args.reward_model_name_or_path}' is a DeepSpeed-Chat step-2 folder: PPO trains its "
                            "critic from it, so export it first (python -m utils.models.dschat_convert)")
        reward = AutoConfig.from_pretrained(args.reward_model_name_or_path)  # converted when loaded
    else:
        reward = checked_reward_config(args.reward_model_name_or_path)
    if _positions(reward) and budget > _positions(reward):
        raise UserError(f"--max_prompt_seq_len + --max_answer_seq_len = {budget} is over the reward model's "
                        f"{_positions(reward)} positions")
    trained = Path(args.reward_model_name_or_path) / "training_args.json"
    template = json.loads(trained.read_text()).get("template") if trained.is_file() else None
    if template and template != args.template:
        raise UserError(f"--template {args.template}, but the reward model was trained on --template {template} "
                        f"texts ({trained}): its scores mean something only on those; pass --template {template}")
    if args.algo == "ppo":
        _check_critic_reads_actor_tokens(args)
    constants = getattr(reward, NORMALIZATION_KEY, None)
    if args.reward_normalization != "none" and not constants:
        raise UserError(f"--reward_normalization {args.reward_normalization}: '{args.reward_model_name_or_path}' "
                        "holds no normalization constants; store them with rw_eval.py --model_name_or_path "
                        "REWARD_MODEL --data_path PAIRS --write_normalization")
    return constants


def _check_critic_reads_actor_tokens(args: argparse.Namespace) -> None:
    """PPO's critic values the actor's own token ids, so both must mean the same by each id."""
    vocabularies = []
    for name in (args.model_name_or_path, args.reward_model_name_or_path):
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=args.trust_remote_code)
        except (OSError, ValueError) as err:
            raise UserError(f"cannot load the tokenizer of '{name}': {err}") from None
        vocabularies.append(tokenizer.get_vocab())
    actor, critic = vocabularies
    differ = [token for token, index in actor.items() if critic.get(token) != index]
    if differ:  # the critic may know more tokens (an added pad), but each of the actor's must be its own
        raise UserError(f"--algo ppo: {len(differ)} of the actor's {len(actor)} tokens have another id, or none, in "
                        f"the reward model's tokenizer (e.g. {differ[0]!r}), and the critic, initialised from the "
                        "reward model, reads the actor's token ids; use RLOO or RAFT, which score text")
