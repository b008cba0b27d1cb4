"""GRPO and its variants (DAPO, Dr. GRPO) on step 3's rollouts: each answer's advantage is its reward against the
other answers to the same prompt, scaled by --scale_rewards; the policy learns from the clipped surrogate of each of
its tokens (--cliprange below, --cliprange_high above), with --kl_ctl times the k3 KL to the reference in the loss,
aggregated by --loss_type. --ppo_epochs passes over the --generation_batches rollouts, one update each, the ratio
taken against the log-probabilities recorded at sampling: every update after the first starts from weights that
moved since. With one update per sampling the ratio is exactly 1.

--filter_zero_variance_groups drops, from the loss and its normalisation, the prompts whose K rewards are all equal
(their advantages are 0; DAPO's dynamic sampling), counted in `groups_dropped`; --mask_truncated_answers keeps the
answers that hit --max_answer_seq_len out of the loss, as their reward judges an unfinished answer.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from utils import distributed as dist
from utils.objectives.group_losses import aggregate_loss, clipped_token_loss, group_advantages, zero_variance_groups
from utils.objectives.policy import PolicyObjective, rollout_stats
from utils.objectives.ppo import dropout_off
from utils.objectives.rollout import Rollout, actions, token_log_probs


@dataclass
class GroupExperience:
    """One rollout, with what was known when it was sampled."""

    rollout: Rollout
    scores: torch.Tensor  # (answers,) as scored
    rewards: torch.Tensor  # as the advantages see them: normalized and clipped
    mask: torch.Tensor  # the answer tokens that count in the loss: dropped groups and masked answers off
    answers: int  # answers that count in the loss
    old_log_probs: torch.Tensor | None  # at sampling; None with one update per sampling, where the ratio is 1
    ref_log_probs: torch.Tensor
    stats: dict[str, float]
    advantages: torch.Tensor | None = None


@dataclass
class GRPOObjective(PolicyObjective):
    progress_keys: tuple[str, ...] = ("reward", "kl_k3", "answer_length", "eos_share")

    @classmethod
    def updates_for(cls, args: argparse.Namespace, prompts_per_process: int) -> int:
        return args.generation_batches * args.ppo_epochs

    @property
    def updates_per_batch(self) -> int:
        return self.updates_for(self.args, 0)

    def updates(self, model: nn.Module, batch: dict[str, torch.Tensor]
                ) -> Iterator[tuple[torch.Tensor, dict[str, float]]]:
        args = self.args
        experience = [self.experience(model, rollout, scores, stats)
                      for rollout, scores, stats in self.sampled(model, batch)]
        batch_std = _batch_std(torch.cat([exp.rewards for exp in experience])) if args.scale_rewards == "batch" else None
        for exp in experience:
            exp.advantages = group_advantages(exp.rewards, args.num_generations, args.scale_rewards, batch_std)
        for epoch in range(args.ppo_epochs):
            for exp in experience:
                loss, stats = self.group_loss(model, exp)
                batch["input_ids"], batch["num_tokens"] = exp.rollout.input_ids, exp.rollout.attention_mask.sum()
                yield loss, exp.stats | stats | {"ppo_epoch": float(epoch)}

    @torch.no_grad()
    def experience(self, model: nn.Module, rollout: Rollout, scores: torch.Tensor, stats: dict[str, float]
                   ) -> GroupExperience:
        """The rewards, the groups and answers that count, and the log-probs of the sampling policy (for more than
        one update per sampling) and of the reference."""
        args, k = self.args, self.args.num_generations
        rewards = self.clipped(scores)
        mask = actions(rollout)
        flat = zero_variance_groups(rewards, k)
        counted = torch.ones_like(rewards, dtype=torch.bool)
        if args.filter_zero_variance_groups:
            counted &= ~flat.repeat_interleave(k).to(counted.device)
        masked = mask * counted[:, None]
        if args.mask_truncated_answers:
            masked = masked * ~rollout.truncated[:, None].to(mask.device)
        old_log_probs = None
        if self.updates_per_batch > 1:
            with dropout_off(model):
                old_log_probs, _ = token_log_probs(model, rollout, self.temperature, self.row_k)
        ref_log_probs, _ = token_log_probs(self.reference, rollout, self.temperature, self.row_k)
        truncated = rollout.truncated.to(counted.device)
        stats = stats | {"zero_variance_share": flat.float().mean().item(),
                         "groups_dropped": float(flat.sum()) if args.filter_zero_variance_groups else 0.0,
                         "answers_masked": float((counted & truncated).sum()) if args.mask_truncated_answers else 0.0}
        return GroupExperience(rollout, scores, rewards, masked, int(counted.sum()), old_log_probs, ref_log_probs,
                               stats)

    def group_loss(self, model: nn.Module, exp: GroupExperience) -> tuple[torch.Tensor, dict[str, float]]:
        """This process's loss, normalised by the answers or tokens of all processes, so that 1 and N processes
        take the same step."""
        args = self.args
        log_probs, entropy = token_log_probs(model, exp.rollout, self.temperature, self.row_k)
        old = log_probs.detach() if exp.old_log_probs is None else exp.old_log_probs
        per_token, clip = clipped_token_loss(log_probs, old, exp.ref_log_probs if args.kl_ctl else None,
                                             exp.advantages, exp.mask, args.cliprange, args.cliprange_high,
                                             args.kl_ctl)
        tokens = dist.sum_across_ranks(exp.mask.sum())
        answers = dist.sum_across_ranks(torch.tensor(float(exp.answers), device=tokens.device))
        loss = aggregate_loss(per_token, exp.mask, args.loss_type, args.max_answer_seq_len, tokens=tokens,
                              answers=answers.clamp(min=1), world_size=dist.world_size())
        stats = rollout_stats(exp.rollout, exp.scores, exp.rewards, log_probs.detach(), exp.ref_log_probs,
                              entropy.detach())
        return loss, stats | {key: value for key, value in clip.items() if key != "kl_k3_token"}


def _batch_std(rewards: torch.Tensor) -> torch.Tensor:
    """The unbiased std of every process's rewards of this step."""
    totals = dist.sum_across_ranks(torch.stack([rewards.sum(), (rewards ** 2).sum(), torch.tensor(
        float(rewards.numel()), device=rewards.device)]).double())
    total, squares, count = totals.tolist()
    mean = total / count
    return torch.tensor(max(squares - count * mean ** 2, 0.0) / max(count - 1, 1)).sqrt().to(rewards.dtype)
