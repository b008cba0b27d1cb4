"""PPO as DeepSpeed-Chat runs it: a critic initialised from the reward model, the KL to the reference paid per token,
the score paid at the answer's last token, generalized advantage estimates, and --ppo_epochs passes of clipped
updates over --generation_batches rollouts sampled first.

Each minibatch pass is one update of the actor (the shared loop takes it) and one of the critic (taken here, by its
own engine); both step their optimizers every --gradient_accumulation_steps updates. One loader batch of prompts
gives generation_batches * ppo_epochs updates.
"""
from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from utils import distributed as dist
from utils.engine.ds_config import deepspeed_config, resolve_dtype
from utils.engine.loop import build_engine, loaded_with, on_gpu
from utils.models.loading import load_reward_model
from utils.models.lora import add_lora
from utils.models.reward_model import RewardModel
from utils.objectives.losses import clipped_policy_loss, clipped_value_loss, gae, token_rewards
from utils.objectives.policy import PolicyObjective, rollout_stats
from utils.objectives.policy_checks import critic_settings
from utils.objectives.rollout import Rollout, actions, token_log_probs


def critic_engine(args: argparse.Namespace, tokenizer: PreTrainedTokenizerBase, zero3: object | None,
                  steps: int) -> nn.Module:
    """The critic: a copy of the reward model, valuing every token, trained by an engine of its own with the
    --critic_* settings."""
    settings = critic_settings(args)
    with loaded_with(zero3):  # its engine partitions it if its own stage is 3
        model = add_lora(load_reward_model(args.reward_model_name_or_path, tokenizer, settings.dropout,
                                           settings.gradient_checkpointing, args.trust_remote_code), settings)
    config = deepspeed_config(settings, dist.world_size(), resolve_dtype(args.dtype, on_gpu()))
    engine = build_engine(RewardModel(model), settings, config, steps)
    engine.train()  # from_pretrained leaves the model in eval mode; its dropout (--critic_dropout) acts in its updates
    return engine


@dataclass
class Experience:
    """One rollout with what was known when it was sampled: the minibatch that PPO's epochs pass over."""

    rollout: Rollout
    old_log_probs: torch.Tensor
    old_values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    stats: dict[str, float]


@contextmanager
def dropout_off(*models: nn.Module) -> Iterator[None]:
    """The models in eval mode for a while, then each back in the mode it was in."""
    modes = [model.training for model in models]
    for model in models:
        model.eval()
    try:
        yield
    finally:
        for model, mode in zip(models, modes):
            model.train(mode)


def critic_values(critic: nn.Module, rollout: Rollout, k: int = 1) -> torch.Tensor:
    """(rows, width - 1): the value of the state before each token from position 1 on, aligned with the log-probs;
    with k > 1 from one row per prompt (the answers' values are the same; the prompt's are 0)."""
    if k == 1:
        return critic(rollout.input_ids, rollout.attention_mask, rollout.position_ids)[:, :-1].float()
    rows = rollout.shared(k)
    ids, positions, mask = (t.to(rollout.input_ids.device) for t in rows.tensors)
    return rows.spread(rows.by_answer(critic(ids, mask, positions)).float(), rollout)


def whiten(experience: list[Experience]) -> None:
    """Shift and scale the advantages to mean 0 and std 1 over the answer tokens of every minibatch on every process,
    so that the split among processes changes nothing."""
    totals = torch.zeros(3, dtype=torch.float64, device=experience[0].advantages.device)  # where the all-reduce runs
    for exp in experience:
        mask = actions(exp.rollout)
        totals += torch.stack([(exp.advantages * mask).sum(), (exp.advantages ** 2 * mask).sum(), mask.sum()])
    total, squares, count = dist.sum_across_ranks(totals).tolist()
    mean = total / max(count, 1)
    std = max(squares / max(count, 1) - mean ** 2, 0.0) ** 0.5
    for exp in experience:
        exp.advantages = (exp.advantages - mean) / (std + 1e-8) * actions(exp.rollout)


@dataclass
class PPOObjective(PolicyObjective):
    critic: nn.Module | None = None  # the critic's DeepSpeed engine
    progress_keys: tuple[str, ...] = ("reward", "kl", "answer_length", "eos_share", "value_loss")

    @classmethod
    def updates_for(cls, args: argparse.Namespace, prompts_per_process: int) -> int:
        return args.generation_batches * args.ppo_epochs

    @classmethod
    def companions_for(cls, args: argparse.Namespace, tokenizer: PreTrainedTokenizerBase, zero3: object | None,
                       steps: int, prompts_per_process: int) -> dict[str, object]:
        return {"critic": critic_engine(args, tokenizer, zero3, steps)}

    @property
    def updates_per_batch(self) -> int:
        return self.updates_for(self.args, 0)

    @property
    def companions(self) -> dict[str, nn.Module]:
        """Engines checkpointed with the actor's."""
        return {"critic": self.critic}

    def updates(self, model: nn.Module, batch: dict[str, torch.Tensor]
                ) -> Iterator[tuple[torch.Tensor, dict[str, float]]]:
        """Sample --generation_batches rollouts, then yield the actor loss of each for --ppo_epochs passes, stepping
        the critic on each as it goes."""
        args = self.args
        experience = [self.experience(model, rollout, scores, stats)
                      for rollout, scores, stats in self.sampled(model, batch)]
        if not args.no_whiten_advantages:
            whiten(experience)
        for epoch in range(args.ppo_epochs):
            for exp in experience:
                critic_stats = self.critic_step(exp)
                loss, stats = self.actor_loss(model, exp)
                batch["input_ids"], batch["num_tokens"] = exp.rollout.input_ids, exp.rollout.attention_mask.sum()
                yield loss, exp.stats | stats | critic_stats | {"ppo_epoch": float(epoch)}

    @torch.no_grad()
    def experience(self, model: nn.Module, rollout: Rollout, scores: torch.Tensor, stats: dict[str, float]
                   ) -> Experience:
        """Log-probs under the sampling policy and the reference, the critic's values, the per-token rewards and
        their advantages and returns."""
        started = time.perf_counter()
        mask = actions(rollout)
        with dropout_off(model, self.critic):  # as the answers were sampled; the updates train with it
            old_log_probs, entropy = token_log_probs(model, rollout, self.temperature, self.row_k)
            values = critic_values(self.critic, rollout, self.row_k) * mask
        ref_log_probs, _ = token_log_probs(self.reference, rollout, self.temperature, self.row_k)
        clipped = self.clipped(scores)
        rewards = token_rewards(clipped, old_log_probs, ref_log_probs, mask, self.args.kl_ctl)
        advantages, returns = gae(rewards, values, mask, self.args.gamma, self.args.lam)
        tokens = mask.sum().clamp(min=1)
        stats = stats | rollout_stats(rollout, scores, clipped, old_log_probs, ref_log_probs, entropy) | {
            "reference_s": time.perf_counter() - started, "values": ((values * mask).sum() / tokens).item(),
            "returns": ((returns * mask).sum() / tokens).item(),
            "advantages": ((advantages * mask).sum() / tokens).item()}
        return Experience(rollout, old_log_probs, values, advantages, returns, stats)

    def critic_step(self, exp: Experience) -> dict[str, float]:
        mask = actions(exp.rollout)
        values = critic_values(self.critic, exp.rollout, self.row_k)
        loss, clipped = clipped_value_loss(values, exp.old_values, exp.returns, mask, self.args.cliprange_value)
        tokens = dist.sum_across_ranks(mask.sum()).clamp(min=1)
        self.critic.backward(loss * dist.world_size() / tokens)
        self.critic.step()
        return {"value_loss": loss.item() / mask.sum().clamp(min=1).item(), "value_clip_fraction": clipped.item()}

    def actor_loss(self, model: nn.Module, exp: Experience) -> tuple[torch.Tensor, dict[str, float]]:
        mask = actions(exp.rollout)
        log_probs, _ = token_log_probs(model, exp.rollout, self.temperature, self.row_k)
        loss, clipped, ratio = clipped_policy_loss(log_probs, exp.old_log_probs, exp.advantages, mask,
                                                   self.args.cliprange)
        tokens = dist.sum_across_ranks(mask.sum()).clamp(min=1)
        return loss * dist.world_size() / tokens, {"clip_fraction": clipped.item(),
                                                   "ratio_max": (ratio * mask).max().item()}
