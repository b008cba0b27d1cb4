"""Step 3's configuration mistakes, refused with one line before any model is loaded: a run that would fail after
minutes of loading, or quietly learn the wrong thing, is worse than no run."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from transformers import AutoConfig

from utils.errors import UserError
from utils.models.dschat_convert import is_dschat_checkpoint
from utils.models.reward_model import NORMALIZATION_KEY, checked_reward_config


def check_flags(args: argparse.Namespace) -> None:
    rloo = args.algo == "rloo"
    if rloo and args.num_generations < 2:
        raise UserError(f"--num_generations {args.num_generations}: RLOO's baseline is the mean reward of the other "
                        "answers to the same prompt, so it needs K >= 2")
    if args.num_generations < 1:
        raise UserError("--num_generations must be at least 1")
    if args.temperature <= 0:
        raise UserError(f"--temperature {args.temperature}: sampling needs a temperature above 0")
    if rloo and (args.top_k or args.top_p < 1):
        raise UserError("--top_k and --top_p change the sampling law, so the log-ratio to the reference no longer "
                        "estimates the KL (it can go negative, and policies exploit that): RLOO samples purely")
    if rloo and args.dropout:
        raise UserError(f"--actor_dropout {args.dropout}: with dropout the training forward no longer scores the "
                        "answers as they were sampled, and the KL to the reference is not 0 at the start; use 0")
    if args.per_device_train_batch_size != args.per_device_generation_batch_size:
        raise UserError(f"--per_device_training_batch_size {args.per_device_train_batch_size} and "
                        f"--per_device_generation_batch_size {args.per_device_generation_batch_size}: each rollout "
                        "trains as one micro-batch here, so give both the same number of prompts")
    if args.generation_batches != 1 or args.ppo_epochs != 1:
        raise UserError("--generation_batches and --ppo_epochs: RLOO and RAFT take one update per rollout here "
                        "(DeepSpeed-Chat's stable setting); leave both at 1")
    if min(args.max_prompt_seq_len, args.max_answer_seq_len, args.per_device_generation_batch_size) < 1:
        raise UserError("--max_prompt_seq_len, --max_answer_seq_len and --per_device_generation_batch_size must be "
                        "at least 1")


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
    if is_dschat_checkpoint(args.reward_model_name_or_path):
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
    constants = getattr(reward, NORMALIZATION_KEY, None)
    if args.reward_normalization != "none" and not constants:
        raise UserError(f"--reward_normalization {args.reward_normalization}: '{args.reward_model_name_or_path}' "
                        "holds no normalization constants; store them with rw_eval.py --model_name_or_path "
                        "REWARD_MODEL --data_path PAIRS --write_normalization")
    return constants
