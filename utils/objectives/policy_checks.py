"""Step 3's configuration mistakes that the flags alone show, refused with one line before anything heavy is imported:
a run that would fail after minutes of loading, or quietly learn the wrong thing, is worse than no run."""
from __future__ import annotations

import argparse

from utils.errors import UserError
from utils.objectives.algorithms import ALGORITHMS
from utils.rewards.settings import check_reward_flags

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
    """Conflicting or out-of-range step-3 flags: the ones every algorithm shares, then its own."""
    algorithm = ALGORITHMS[args.algo]
    for name, reason in DSCHAT_REFUSED.items():
        if getattr(args, name) is not None:
            raise UserError(f"--{name}: {reason}")
    if algorithm.critic and not args.reward_model_name_or_path:
        raise UserError(f"--algo {args.algo} trains its critic from the reward model: pass "
                        "--critic_model_name_or_path (a step-2 output)")
    if algorithm.learns_from == "samples" and not (args.reward_model_name_or_path or args.reward_funcs
                                                   or args.reward_url):
        raise UserError(f"--algo {args.algo} scores sampled answers: pass a reward model (--critic_model_name_or_path, "
                        "a step-2 output), --reward_funcs or --reward_url")
    if algorithm.learns_from == "samples":
        check_reward_flags(args)
    if algorithm.check is not None:
        algorithm.check(args)
    if args.num_generations < 1:
        raise UserError("--num_generations must be at least 1")
    if args.temperature <= 0:
        raise UserError(f"--temperature {args.temperature}: sampling needs a temperature above 0")
    if algorithm.sampling_law and (args.top_k or args.top_p < 1):
        raise UserError("--top_k and --top_p change the sampling law, so the log-ratio to the reference no longer "
                        "estimates the KL (it can go negative, and policies exploit that): RLOO and PPO sample "
                        "purely")
    if algorithm.sampling_law and args.dropout:
        raise UserError(f"--actor_dropout {args.dropout}: with dropout the training forward no longer scores the "
                        "answers as they were sampled, and the KL to the reference is not 0 at the start; use 0")
    if algorithm.whole_rollouts and args.per_device_train_batch_size != args.per_device_generation_batch_size:
        raise UserError(f"--per_device_training_batch_size {args.per_device_train_batch_size} and "
                        f"--per_device_generation_batch_size {args.per_device_generation_batch_size}: each rollout "
                        "trains as one micro-batch (PPO: one minibatch) here, so give both the same number of prompts")
    if "ppo_epochs" not in algorithm.reads and (args.generation_batches != 1 or args.ppo_epochs != 1):
        raise UserError(f"--generation_batches and --ppo_epochs: --algo {args.algo} takes them as 1 here (RLOO and "
                        "RAFT: one update per rollout, DeepSpeed-Chat's stable setting); leave both at 1, or use "
                        "--algo ppo or grpo")
    if min(args.max_prompt_seq_len, args.max_answer_seq_len, args.per_device_generation_batch_size) < 1:
        raise UserError("--max_prompt_seq_len, --max_answer_seq_len and --per_device_generation_batch_size must be "
                        "at least 1")


def critic_settings(args: argparse.Namespace) -> argparse.Namespace:
    """The flags the critic's engine reads under the shared names: the actor's, with the --critic_* values."""
    return argparse.Namespace(**vars(args) | {
        "learning_rate": args.critic_learning_rate, "weight_decay": args.critic_weight_decay,
        "zero_stage": args.zero_stage if args.critic_zero_stage is None else args.critic_zero_stage,
        "gradient_checkpointing": args.critic_gradient_checkpointing, "dropout": args.critic_dropout,
        "lora_dim": args.critic_lora_dim, "lora_module_name": args.critic_lora_module_name,
        "lora_learning_rate": args.critic_lora_learning_rate})
