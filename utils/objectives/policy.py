"""What step 3 adds to the shared loop for the algorithms that learn from the policy's own answers: each loader batch
of prompts becomes K sampled answers per prompt, scored by the reward model, and the policy learns from them;
evaluation samples held-out prompts and watches for the signs of reward hacking. `PolicyObjective` holds what they
share (sampling, scoring, statistics, evaluation); each algorithm is a subclass with its loss.

RLOO: the shaped reward R = clip(norm(score)) - kl_ctl * sum_t log(pi / pi_ref) per answer, the advantage
A_i = R_i - mean_{j != i} R_j over the K answers of a prompt, and the clipped policy-gradient loss over the answers'
tokens. RAFT: the best of the K answers by reward (ties to the first, truncated answers never kept) is trained on
with step 1's loss.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from utils import distributed as dist
from utils.data.formatting import format_prompt
from utils.data.sources import Row
from utils.engine.loop import Objective
from utils.models.lora import WithoutAdapters
from utils.objectives.losses import clipped_policy_loss, kl_k1, kl_k3
from utils.objectives.answer_rewards import AnswerRewards
from utils.objectives.intervals import held_out_intervals
from utils.objectives.rollout import Rollout, actions, encode_prompts, sample, sampling_config, token_log_probs
from utils.rewards.combined import RewardFunctions
from utils.run_files import EVAL_BEFORE


def normalized(scores: torch.Tensor, mode: str, constants: dict[str, float] | None) -> torch.Tensor:
    """--reward_normalization: none, z (mean and std) or minmax (to [-1, 1]), with rw_eval.py's stored constants."""
    if mode == "none":
        return scores
    if mode == "z":
        return (scores - constants["mean"]) / max(constants["std"], 1e-8)
    return 2 * (scores - constants["min"]) / max(constants["max"] - constants["min"], 1e-8) - 1


def rloo_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """Each reward minus the mean of the other K-1 rewards of its prompt: rows are prompt-major."""
    grouped = rewards.view(-1, k)
    baseline = (grouped.sum(dim=1, keepdim=True) - grouped) / (k - 1)
    return (grouped - baseline).view(-1)


def raft_choice(rewards: torch.Tensor, truncated: torch.Tensor, k: int, selection: str) -> torch.Tensor:
    """(rows,) bool: the answers RAFT trains on. per_prompt: each prompt's best, ties to the first; global
    (LMFlow's variant): the best 1/K of all answers. Truncated answers are never kept."""
    eligible = torch.where(truncated, torch.full_like(rewards, -torch.inf), rewards)
    keep = torch.zeros_like(truncated)
    if selection == "per_prompt":
        grouped = eligible.view(-1, k)
        best = grouped.argmax(dim=1)  # the first of equal maxima
        rows = torch.arange(grouped.size(0)) * k + best
        keep[rows] = torch.isfinite(grouped.max(dim=1).values)
    else:
        count = max(1, rewards.numel() // k)
        top = torch.argsort(-eligible, stable=True)[:count]
        keep[top] = torch.isfinite(eligible[top])
    return keep


def _check_figures(merged: dict[str, list], names: list[str]) -> dict[str, float]:
    """Each reward function's figures over the held-out answers, sampled and greedy; `accuracy` and
    `greedy_accuracy`: the shares math_answer marks right."""
    if not names:
        return {}
    figures = RewardFunctions.stats({name: merged[f"reward_{name}"] for name in names})
    figures |= {f"greedy_{key}": value for key, value in
                RewardFunctions.stats({name: merged[f"greedy_reward_{name}"] for name in names}).items()}
    if "full_marks_math_answer" in figures:
        figures["accuracy"] = figures["full_marks_math_answer"]
        figures["greedy_accuracy"] = figures["greedy_full_marks_math_answer"]
    return figures


def distinct_2(answers: list[str]) -> float:
    """Distinct word bigrams over all bigrams of the answers: it falls as a policy collapses onto a few phrasings."""
    bigrams = [tuple(words[i:i + 2]) for answer in answers for words in [answer.split()]
               for i in range(len(words) - 1)]
    return len(set(bigrams)) / len(bigrams) if bigrams else 0.0


def answer_stats(rollouts: list[Rollout]) -> dict[str, float]:
    """What every optimizer step logs about the answers it learned from, whatever the algorithm: their length and
    how they ended."""
    def share(flags: list[torch.Tensor]) -> float:
        return torch.cat(flags).float().mean().item()

    return {"answer_length": torch.cat([r.lengths for r in rollouts]).float().mean().item(),
            "eos_share": share([r.ended for r in rollouts]), "truncated_share": share([r.truncated for r in rollouts]),
            "empty_share": share([r.empty for r in rollouts])}


def rollout_stats(rollout: Rollout, scores: torch.Tensor, rewards: torch.Tensor, log_probs: torch.Tensor,
                  ref_log_probs: torch.Tensor, entropy: torch.Tensor) -> dict[str, float]:
    """The answers' statistics, with their rewards, both KL estimates and the policy's entropy."""
    mask = actions(rollout)
    return {"reward": scores.mean().item(), "reward_std": scores.std().item(),
            "reward_normalized": rewards.mean().item(), "kl": kl_k1(log_probs, ref_log_probs, mask).mean().item(),
            "kl_k3": kl_k3(log_probs, ref_log_probs, mask).mean().item()} | answer_stats([rollout]) | {
            "entropy": ((entropy * mask).sum() / mask.sum().clamp(min=1)).item()}


@dataclass
class PolicyObjective(Objective):
    """A loader batch of prompt indices in; sampled, scored and learned from by the subclass's loss, one update per
    batch unless it overrides `updates`. batch["input_ids"] and batch["num_tokens"] are set to the rollout's, for the
    loop's throughput figures."""

    args: argparse.Namespace
    prompts: list[Row]
    tokenizer: PreTrainedTokenizerBase
    reference: PreTrainedModel | WithoutAdapters | None
    rewards: AnswerRewards
    normalization: dict[str, float] | None
    judge: Callable[[list[str], list[str]], float] | None = None
    warn: Callable[[str], None] = print
    before: dict[str, float] = field(default_factory=dict)
    # the progress bar's figures; metrics.jsonl and TensorBoard get them all
    progress_keys: tuple[str, ...] = ("reward", "kl", "answer_length", "eos_share")

    def prompt_texts(self, rows: list[Row]) -> list[str]:
        return [format_prompt(r["prompt"], self.args.template, self.tokenizer) for r in rows]

    def _rollout(self, model: nn.Module, rows: list[Row], k: int, seed: int, greedy: bool = False
                 ) -> tuple[Rollout, dict[str, float]]:
        started = time.perf_counter()
        ids, mask, _ = encode_prompts(self.prompt_texts(rows), self.tokenizer, self.args.max_prompt_seq_len)
        device = dist.input_device(model)
        config = sampling_config(self.tokenizer, self.args.max_answer_seq_len, self.args.temperature, greedy,
                                 self.args.top_k, self.args.top_p)
        rollout = sample(model, self.tokenizer, ids.to(device), mask.to(device), k, config, seed,
                         self.args.zero3_generation, prefill_once=not self.args.no_shared_prompt)
        generated = time.perf_counter()
        scores, per_function = self.rewards(rows, rollout, k)
        timing = {"generate_s": generated - started, "score_s": time.perf_counter() - generated,
                  "generated_tokens_per_s": float(rollout.lengths.sum()) / max(generated - started, 1e-9)}
        checks = RewardFunctions.stats(per_function) if per_function else {}
        return rollout, timing | checks | {"_scores": scores, "_functions": per_function}

    @classmethod
    def rollout_prompts(cls, args: argparse.Namespace, prompts: list[Row]) -> tuple[list[Row], int, str]:
        """The prompts to train on, how many each process samples per loader batch, and what that batch is called in
        an error: one rollout, or --generation_batches of them."""
        if args.generation_batches == 1:
            return prompts, args.per_device_generation_batch_size, "one rollout"
        return (prompts, args.per_device_generation_batch_size * args.generation_batches,
                f"the --generation_batches {args.generation_batches} rollouts")

    @classmethod
    def updates_for(cls, args: argparse.Namespace, prompts_per_process: int) -> int:
        """The updates a loader batch gives, known before the objective exists: the schedule counts them."""
        return 1

    @classmethod
    def companions_for(cls, args: argparse.Namespace, tokenizer: PreTrainedTokenizerBase, zero3: object | None,
                       steps: int, prompts_per_process: int) -> dict[str, object]:
        """What the subclass is built with beyond the shared fields, once the actor's engine exists."""
        return {}

    def sampled(self, model: nn.Module, batch: dict[str, torch.Tensor]
                ) -> Iterator[tuple[Rollout, torch.Tensor, dict[str, float]]]:
        """The batch's prompts, --per_device_generation_batch_size at a time: K answers to each, their scores and
        the time each part took."""
        indices, size = batch["prompt_index"], self.args.per_device_generation_batch_size
        for start in range(0, len(indices), size):
            chunk = indices[start:start + size]
            rollout, stats = self._rollout(model, [self.prompts[i] for i in chunk.tolist()], self.args.num_generations,
                                           self.seed(model, chunk))
            stats.pop("_functions")
            yield rollout, stats.pop("_scores").to(rollout.input_ids.device), stats

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        (rollout, scores, stats), = self.sampled(model, batch)
        loss, learned = self.loss(model, rollout, scores)
        batch["input_ids"], batch["num_tokens"] = rollout.input_ids, rollout.attention_mask.sum()
        return loss, stats | learned

    def seed(self, model: nn.Module, indices: torch.Tensor) -> int:
        """A rollout's seed: the same for the same step, prompts and process, so a resumed run samples it again."""
        return (self.args.seed * 1_000_003 + getattr(model, "global_steps", 0) * 9_973 + int(indices[0]) * 31
                + dist.rank())

    @property
    def temperature(self) -> float:
        """The temperature of the training forward: that of the sampling law, whose ratios RLOO and PPO take."""
        return self.args.temperature

    @property
    def row_k(self) -> int:
        """Answers per row in the actor's and the reference's passes: a prompt's K, computed once, or 1
        (--no_shared_prompt)."""
        return 1 if self.args.no_shared_prompt else self.args.num_generations

    def clipped(self, scores: torch.Tensor) -> torch.Tensor:
        """The scores as the objective sees them: normalized (--reward_normalization), then clipped to
        ±--clip_reward_value."""
        args = self.args
        return normalized(scores, args.reward_normalization, self.normalization).clamp(-args.clip_reward_value,
                                                                                       args.clip_reward_value)

    def loss(self, model: nn.Module, rollout: Rollout, scores: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one process's share of the experience, normalized over the answer tokens that count on all
        processes, so that 1 and N processes take the same step."""
        started = time.perf_counter()
        with torch.no_grad():
            ref_log_probs, _ = token_log_probs(self.reference, rollout, self.temperature, self.row_k)
        referenced = time.perf_counter()
        log_probs, entropy = token_log_probs(model, rollout, self.temperature, self.row_k)
        rewards = self.clipped(scores)
        loss, tokens, extra = self.policy_loss(rollout, scores, rewards, log_probs, ref_log_probs)
        stats = {"reference_s": referenced - started} | rollout_stats(rollout, scores, rewards, log_probs.detach(),
                                                                    ref_log_probs, entropy.detach()) | extra
        return loss * dist.world_size() / dist.sum_across_ranks(tokens).clamp(min=1), stats

    @torch.no_grad()
    def evaluate(self, model: nn.Module, rows: list[Row], step: int, output_dir: Path) -> dict[str, float]:
        """One seeded sample and one greedy answer per held-out prompt, scored; KL to the reference, length, EOS
        share, distinct-2, the win rate against the step-0 samples and, with a judge, the flawed share. Every answer
        goes to samples.jsonl; signs of reward hacking or collapse are warned about."""
        module = getattr(model, "module", model)
        mine = rows[dist.rank()::dist.world_size()]
        sampled, sampled_stats = self._rollout(model, mine, 1, self.args.seed)
        greedy, greedy_stats = self._rollout(model, mine, 1, self.args.seed, greedy=True)
        local = {"prompts": [r["prompt"] for r in mine], "sampled": sampled.answers, "greedy": greedy.answers,
                 "sampled_reward": sampled_stats["_scores"].tolist(), "greedy_reward": greedy_stats["_scores"].tolist(),
                 "length": sampled.lengths.tolist(), "ended": sampled.ended.tolist()}
        for name, values in sampled_stats["_functions"].items():  # each reward function's value of each answer
            local[f"reward_{name}"], local[f"greedy_reward_{name}"] = values, greedy_stats["_functions"][name]
        if self.reference is not None:  # DPO with precomputed reference log-probs has freed its reference
            ref_log_probs, _ = token_log_probs(self.reference, sampled, self.args.temperature)
            log_probs, _ = token_log_probs(module, sampled, self.args.temperature)
            local["kl"] = kl_k1(log_probs, ref_log_probs, actions(sampled)).tolist()
        merged = {key: [v for part in dist.gather_objects(local) for v in part[key]] for key in local}
        n = len(merged["prompts"])
        metrics = {"reward": sum(merged["sampled_reward"]) / n, "greedy_reward": sum(merged["greedy_reward"]) / n,
                   "answer_length": sum(merged["length"]) / n, "eos_share": sum(merged["ended"]) / n,
                   "distinct2": distinct_2(merged["sampled"]), "prompts": n}
        if "kl" in merged:
            metrics["kl_to_reference"] = sum(merged["kl"]) / n
        if self.judge is not None:
            metrics["flawed_share"] = self.judge([str(p) for p in merged["prompts"]], merged["sampled"])
        metrics |= _check_figures(merged, list(sampled_stats["_functions"]))
        metrics["ci95"] = held_out_intervals(merged)
        self._compare_with_start(metrics, merged, output_dir, step)
        if dist.is_main():
            with (output_dir / "samples.jsonl").open("a") as handle:
                for i in range(n):
                    handle.write(json.dumps({"step": step} | {key: merged[key][i] for key in merged}) + "\n")
        return metrics

    def _compare_with_start(self, metrics: dict[str, float], merged: dict[str, list], output_dir: Path,
                            step: int) -> None:
        """Every process keeps the step-0 evaluation, and the first writes it for a resumed run to read back; the
        step decides which it is, not the file, which another process may be writing at that moment."""
        path = output_dir / EVAL_BEFORE
        if step == 0:
            self.before = metrics | {"sampled_reward": merged["sampled_reward"]}
            if dist.is_main():
                path.with_suffix(".tmp").write_text(json.dumps(self.before) + "\n")
                path.with_suffix(".tmp").replace(path)
            return
        if not self.before:  # a resumed run
            self.before = json.loads(path.read_text())
        start = self.before["sampled_reward"]
        metrics["win_rate"] = sum(now > then for now, then in zip(merged["sampled_reward"], start)) / len(start)
        for key in ("reward", "distinct2", "flawed_share", "accuracy", "greedy_accuracy", "ci95"):
            if key in self.before:
                metrics[f"{key}_before"] = self.before[key]
        for key in ("accuracy", "greedy_accuracy"):
            if key in metrics:
                metrics[f"{key}_after"] = metrics[key]
        if metrics["eos_share"] < 0.5:
            self.warn(f"WARNING: only {metrics['eos_share']:.0%} of the answers end with the EOS: the policy is "
                      "learning to ramble (was it fine-tuned with step 1?)")
        if metrics.get("kl_to_reference", 0) > 10:
            self.warn(f"WARNING: the KL to the reference is {metrics['kl_to_reference']:.1f} nats per answer: the "
                      "policy has drifted far; raise --kl_ctl or lower the learning rate")
        if metrics["distinct2"] < 0.5 * self.before["distinct2"]:
            self.warn(f"WARNING: distinct-2 fell from {self.before['distinct2']:.3f} to {metrics['distinct2']:.3f}: "
                      "the answers are collapsing onto a few phrasings, a sign of reward hacking")


class RLOOObjective(PolicyObjective):
    def policy_loss(self, rollout: Rollout, scores: torch.Tensor, rewards: torch.Tensor, log_probs: torch.Tensor,
                    ref_log_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """The summed loss over this process's answer tokens, their count, and what to log."""
        mask = actions(rollout)
        kl = kl_k1(log_probs.detach(), ref_log_probs, mask)
        advantages = rloo_advantages(rewards - self.args.kl_ctl * kl, self.args.num_generations)
        loss, clipped, ratio = clipped_policy_loss(log_probs, log_probs.detach(), advantages, mask,
                                                   self.args.cliprange)
        return loss, mask.sum(), {"clip_fraction": clipped.item(), "ratio_max": (ratio * mask).max().item()}


class RAFTObjective(PolicyObjective):
    @property
    def temperature(self) -> float:
        """RAFT trains the model itself on the kept answers, as step 1 does."""
        return 1.0

    def policy_loss(self, rollout: Rollout, scores: torch.Tensor, rewards: torch.Tensor, log_probs: torch.Tensor,
                    ref_log_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        keep = raft_choice(rewards, rollout.truncated, self.args.num_generations, self.args.raft_selection).float()
        kept = actions(rollout) * keep[:, None]
        return -(log_probs * kept).sum(), kept.sum(), {
            "kept_share": keep.mean().item(), "kept_reward": (scores * keep).sum().item() / max(keep.sum().item(), 1)}
