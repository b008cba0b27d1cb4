"""Step 3's algorithms, one entry each: what it learns from, the flags only it reads, its own flag checks, its line
in the model card and the objective class that trains it. The flags (choices, help, the flags a run does not read,
the checks) and the run read this table; nothing else branches on --algo.

Nothing here imports torch: the flags read it before the engine loads. The objective is named by its import path and
imported when the run starts.
"""
from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from typing import Callable

from utils.errors import UserError

CRITIC_FLAGS = ("critic_learning_rate", "critic_weight_decay", "critic_zero_stage", "critic_gradient_checkpointing",
                "critic_dropout", "critic_lora_dim", "critic_lora_module_name", "critic_lora_learning_rate")
REWARD_FLAGS = ("reward_funcs", "reward_weights", "format_regex", "overlong_buffer", "reward_url", "reward_timeout",
                "reward_retries")  # checkable rewards
SAMPLING_FLAGS = ("num_generations", "per_device_generation_batch_size", *REWARD_FLAGS)  # answers sampled and scored
SCORE_FLAGS = ("reward_normalization", "clip_reward_value")  # how the reward model's scores become rewards
DPO_FLAGS = ("beta", "dpo_loss", "label_smoothing")
PAIR_FLAGS = ("max_seq_len", "overlength", "length_grouping", "data_output_path")  # tokenized rows of a file


@dataclass(frozen=True)
class Algorithm:
    name: str
    summary: str  # its part of --algo's help
    objective: str  # "module:Class", imported by objective_class()
    learns_from: str  # "samples" (the policy's own answers, scored) or "pairs" (a preference file)
    reads: tuple[str, ...]  # the step-3 flags that only some algorithms read
    card: Callable[[argparse.Namespace], str]  # the model card's "algorithm" row
    check: Callable[[argparse.Namespace], None] | None = None  # its own flag checks, after the shared ones
    sampling_law: bool = False  # its ratios and KL are those of the sampling law: no top-k/top-p, no dropout
    whole_rollouts: bool = False  # each rollout trains as one micro-batch (PPO: one minibatch)
    critic: bool = False  # a critic initialised from the reward model, which reads the actor's token ids
    defaults: tuple[tuple[str, object], ...] = ()  # its own defaults of shared flags, where not given


def _sampling(args: argparse.Namespace) -> str:
    return f"K = {args.num_generations}, temperature {args.temperature:g}"


def _shaped(args: argparse.Namespace) -> str:
    return f"{args.algo}, {_sampling(args)}, kl_ctl {args.kl_ctl:g}, reward normalization {args.reward_normalization}"


def _check_dpo(args: argparse.Namespace) -> None:
    if args.beta <= 0:
        raise UserError(f"--beta {args.beta}: the implicit reward is beta * log(pi / pi_ref), so beta must be above 0")
    if not 0 <= args.label_smoothing < 0.5:
        raise UserError(f"--label_smoothing {args.label_smoothing}: the share of flipped labels lies in [0, 0.5)")
    if args.label_smoothing and args.dpo_loss == "ipo":
        raise UserError("--label_smoothing applies to the sigmoid loss; IPO has none")


def _check_offline_dpo(args: argparse.Namespace) -> None:
    _check_dpo(args)
    if args.prompt_data_path:
        raise UserError("--prompt_data_path: --algo dpo trains on the preference pairs of --data_path, not on prompts")


def _check_rloo(args: argparse.Namespace) -> None:
    if args.num_generations < 2:
        raise UserError(f"--num_generations {args.num_generations}: RLOO's baseline is the mean reward of the other "
                        "answers to the same prompt, so it needs K >= 2")


def _check_online_dpo(args: argparse.Namespace) -> None:
    _check_dpo(args)
    if args.precompute_ref_log_probs:
        raise UserError("--precompute_ref_log_probs: online DPO's reference changes every iteration, and computes its "
                        "log-probs once per iteration anyway; use it with --algo dpo")
    if min(args.num_iterations, args.prompts_per_iteration) < 0 or args.tie_threshold < 0:
        raise UserError("--num_iterations, --prompts_per_iteration and --tie_threshold must be 0 or more")
    if args.reward_normalization != "none":
        raise UserError(f"--reward_normalization {args.reward_normalization}: online DPO pairs each prompt's best and "
                        "worst answers by the reward model's raw scores (--tie_threshold is in their units), so "
                        "normalized scores would not be used; leave --reward_normalization at none")
    if args.num_generations < 2:
        raise UserError(f"--num_generations {args.num_generations}: online DPO pairs the best and the worst of K "
                        "answers to a prompt, so it needs K >= 2")


def _check_passes(args: argparse.Namespace) -> None:
    if min(args.generation_batches, args.ppo_epochs) < 1:
        raise UserError("--generation_batches and --ppo_epochs must be at least 1")


def _check_grpo(args: argparse.Namespace) -> None:
    _check_passes(args)
    if args.num_generations < 2:
        raise UserError(f"--num_generations {args.num_generations}: GRPO's advantage is a reward against the other "
                        "answers to the same prompt, so it needs K >= 2")
    if args.cliprange_high is None:
        args.cliprange_high = args.cliprange
    if not 0 < args.cliprange < 1 or args.cliprange_high < args.cliprange:
        raise UserError(f"--cliprange {args.cliprange} and --cliprange_high {args.cliprange_high}: the ratio is clipped "
                        "to [1 - cliprange, 1 + cliprange_high], with 0 < cliprange < 1 and cliprange_high >= cliprange")
    if args.kl_ctl < 0:
        raise UserError(f"--kl_ctl {args.kl_ctl}: the weight of the KL in the loss is 0 or more")


def _check_ppo(args: argparse.Namespace) -> None:
    _check_passes(args)
    if not 0 <= args.lam <= 1 or not 0 <= args.gamma <= 1:
        raise UserError(f"--gamma {args.gamma} and --lam {args.lam} must lie between 0 and 1")


ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (
    Algorithm("rloo", "policy gradient with the other K-1 answers' mean reward as the baseline and a KL penalty to "
                      "the reference", "utils.objectives.policy:RLOOObjective", "samples",
              reads=(*SAMPLING_FLAGS, *SCORE_FLAGS, "kl_ctl"), card=_shaped, check=_check_rloo, sampling_law=True,
              whole_rollouts=True),
    Algorithm("raft", "fine-tune on the best of K", "utils.objectives.policy:RAFTObjective", "samples",
              reads=(*SAMPLING_FLAGS, *SCORE_FLAGS, "top_k", "top_p", "raft_selection"), card=_shaped,
              whole_rollouts=True),
    Algorithm("ppo", "DeepSpeed-Chat's PPO with a critic initialised from the reward model",
              "utils.objectives.ppo:PPOObjective", "samples",
              reads=(*SAMPLING_FLAGS, *SCORE_FLAGS, "kl_ctl", "cliprange", "cliprange_value", "gamma", "lam",
                     "no_whiten_advantages", "generation_batches", "ppo_epochs", *CRITIC_FLAGS),
              card=_shaped, check=_check_ppo, sampling_law=True, whole_rollouts=True, critic=True),
    Algorithm("grpo", "group-relative policy optimisation, each answer's reward against the other answers to its "
                      "prompt (GRPO, DAPO or Dr. GRPO by --loss_type and --scale_rewards)",
              "utils.objectives.grpo:GRPOObjective", "samples",
              reads=(*SAMPLING_FLAGS, *SCORE_FLAGS, "kl_ctl", "cliprange", "cliprange_high", "scale_rewards",
                     "loss_type", "filter_zero_variance_groups", "mask_truncated_answers", "generation_batches",
                     "ppo_epochs"),
              card=lambda args: f"grpo ({args.loss_type} loss, {args.scale_rewards} scaling), {_sampling(args)}, "
                                f"beta {args.kl_ctl:g}, clip [{1 - args.cliprange:g}, {1 + args.cliprange_high:g}]",
              check=_check_grpo, sampling_law=True, whole_rollouts=True, defaults=(("kl_ctl", 0.0),)),
    Algorithm("dpo", "DPO on the preference pairs of --data_path (step 2's share)",
              "utils.objectives.dpo:DPOObjective", "pairs",
              reads=(*PAIR_FLAGS, "top_k", "top_p", *DPO_FLAGS, "precompute_ref_log_probs"),
              card=lambda args: f"dpo ({args.dpo_loss} loss), beta {args.beta:g}, label smoothing "
                                f"{args.label_smoothing:g}",
              check=_check_offline_dpo),
    Algorithm("online_dpo", "RLHFlow's loop, DPO on the best and worst of K sampled answers, iteration by iteration",
              "utils.objectives.online_dpo:OnlineDPOObjective", "samples",
              reads=(*SAMPLING_FLAGS, "top_k", "top_p", *DPO_FLAGS, "num_iterations", "prompts_per_iteration",
                     "tie_threshold"),
              card=lambda args: f"online_dpo ({args.dpo_loss} loss), beta {args.beta:g}, {_sampling(args)}, best and "
                                f"worst of K, ties within {args.tie_threshold:g} skipped",
              check=_check_online_dpo),
)}


def objective_class(algo: str) -> type:
    module, _, name = ALGORITHMS[algo].objective.partition(":")
    return getattr(importlib.import_module(module), name)
