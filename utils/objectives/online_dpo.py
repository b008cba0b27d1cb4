"""RLHFlow's online iterative DPO: each iteration samples K answers per prompt, the reward model picks the best and
the worst as a pair, and the policy learns from those pairs by DPO against itself as the iteration began.

One loader batch is one iteration's prompts. Their pairs are spread evenly over a fixed number of micro-batches,
each one update of the shared loop, so that every iteration takes the same steps on every process and checkpoints
fall at iteration boundaries. The reference's log-probabilities are the policy's own, computed (dropout off) before
the iteration's first update: the iteration's starting model is the reference without a second copy, and the next
iteration starts from where this one ended.
"""
from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from utils import distributed as dist
from utils.data.sources import Row
from utils.errors import UserError
from utils.objectives.dpo import DPOObjective, Pair, answer_log_probs, collate_preferences
from utils.objectives.policy import PolicyObjective, answer_stats
from utils.objectives.ppo import dropout_off
from utils.objectives.rollout import Rollout


def best_and_worst(scores: torch.Tensor, k: int, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per prompt (rows are prompt-major): the rollout rows of its best and worst answers (the first of equal ones),
    and whether they make a pair: a best that beats the worst by no more than `threshold` is a tie."""
    grouped = scores.view(-1, k)
    offsets = torch.arange(grouped.size(0)) * k
    keep = grouped.max(dim=1).values - grouped.min(dim=1).values > threshold
    return grouped.argmax(dim=1) + offsets, grouped.argmin(dim=1) + offsets, keep


def answer_pair(rollout: Rollout, chosen: int, rejected: int) -> Pair:
    """Prompt + answer ids of two rollout rows of one prompt, unpadded, answers up to and with their EOS."""
    width = rollout.prompt_width
    prompt = rollout.input_ids[chosen, :width][rollout.attention_mask[chosen, :width].bool()].tolist()
    answers = [rollout.input_ids[row, width:][rollout.answer_mask[row, width:].bool()].tolist()
               for row in (chosen, rejected)]
    return {"chosen": prompt + answers[0], "rejected": prompt + answers[1], "starts": [len(prompt)] * 2}


@dataclass
class OnlineDPOObjective(PolicyObjective):
    """Rollouts, scoring and evaluation as RLOO's; the updates are DPO's on each iteration's best/worst pairs."""

    dpo: DPOObjective = field(default_factory=lambda: DPOObjective(beta=0.1))
    prompts_per_process: int = 1
    progress_keys: tuple[str, ...] = ("reward", "reward_best", "tie_share", "accuracy")

    @classmethod
    def rollout_prompts(cls, args: argparse.Namespace, prompts: list[Row]) -> tuple[list[Row], int, str]:
        """An iteration's prompts, --prompts_per_iteration on all processes together, split evenly; with
        --num_iterations, the prompts those iterations need."""
        world = dist.world_size()
        total = args.prompts_per_iteration or args.per_device_generation_batch_size * world
        if total % world or total // world % args.per_device_train_batch_size:
            raise UserError(f"--prompts_per_iteration {total} must split evenly over {world} process(es), and each "
                            f"share into --per_device_training_batch_size {args.per_device_train_batch_size} pairs")
        if args.num_iterations:
            if args.num_train_epochs != 1:
                raise UserError("--num_iterations counts the whole run's iterations, each on new prompts: leave "
                                "--num_train_epochs at 1")
            need = args.num_iterations * total
            if len(prompts) < need:
                raise UserError(f"--num_iterations {args.num_iterations} of --prompts_per_iteration {total} needs "
                                f"{need} prompts; the data gives {len(prompts)}")
            prompts = prompts[:need]
        return prompts, total // world, f"one iteration of --prompts_per_iteration {total}"

    @classmethod
    def updates_for(cls, args: argparse.Namespace, prompts_per_process: int) -> int:
        return prompts_per_process // args.per_device_train_batch_size

    @classmethod
    def companions_for(cls, args: argparse.Namespace, tokenizer: PreTrainedTokenizerBase, zero3: object | None,
                       steps: int, prompts_per_process: int) -> dict[str, object]:
        return {"dpo": DPOObjective(args.beta, args.dpo_loss, args.label_smoothing),
                "prompts_per_process": prompts_per_process}

    @property
    def updates_per_batch(self) -> int:
        return self.updates_for(self.args, self.prompts_per_process)

    def updates(self, engine: nn.Module, batch: dict[str, torch.Tensor]
                ) -> Iterator[tuple[torch.Tensor, dict[str, float]]]:
        pairs, stats = self._sample_pairs(engine, batch)
        for part in self._micro_batches(engine, pairs):
            loss, learned = self.dpo(engine, part)
            batch["input_ids"], batch["num_tokens"] = part["input_ids"], part["num_tokens"]  # throughput figures
            yield loss, stats | learned

    def _sample_pairs(self, engine: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[list[Pair], dict[str, float]]:
        """This process's share of the iteration: K answers per prompt, one generation batch at a time, and the
        best/worst pair of each prompt whose answers do not tie."""
        args, k = self.args, self.args.num_generations
        pairs, scores, kept, rollouts, timing = [], [], [], [], {"generate_s": 0.0, "score_s": 0.0}
        for rollout, chunk_scores, stats in self.sampled(engine, batch):
            chunk_scores = chunk_scores.cpu()
            best, worst, keep = best_and_worst(chunk_scores, k, args.tie_threshold)
            pairs += [answer_pair(rollout, b, w) for b, w, ok in zip(best.tolist(), worst.tolist(), keep.tolist())
                      if ok]
            scores.append(chunk_scores.view(-1, k))
            kept.append(keep)
            rollouts.append(rollout)
            timing = {key: timing[key] + stats[key] for key in timing}
        grouped, keep = torch.cat(scores), torch.cat(kept)
        ties = int(dist.sum_across_ranks(torch.tensor(float((~keep).sum()), device=engine.device)).item())
        prompts = len(batch["prompt_index"]) * dist.world_size()
        if ties and dist.is_main():
            self.warn(f"step {getattr(engine, 'global_steps', 0)}: {ties} of {prompts} prompts gave no pair: their "
                      f"best and worst rewards tie within --tie_threshold {args.tie_threshold} (skipped)")
        return pairs, timing | {
            "reward": grouped.mean().item(), "reward_best": grouped.max(dim=1).values.mean().item(),
            "reward_worst": grouped.min(dim=1).values.mean().item(), "ties_skipped": float(ties),
            "tie_share": ties / prompts} | answer_stats(rollouts)

    def _micro_batches(self, engine: nn.Module, pairs: list[Pair]) -> list[dict[str, torch.Tensor]]:
        """The pairs spread evenly over the iteration's updates, each with the reference log-probs of the policy as
        it is now. An update left without a pair (more ties than updates) trains on a placeholder of weight 0, so
        that every process still runs the same passes."""
        collate = functools.partial(collate_preferences, pad_id=self.tokenizer.pad_token_id,
                                    shared=not self.args.no_shared_prompt)
        placeholder = pairs[:1] or [{"chosen": [self.tokenizer.eos_token_id] * 2,
                                     "rejected": [self.tokenizer.eos_token_id] * 2, "starts": [1, 1]}]
        out = []
        with torch.no_grad(), dropout_off(engine):
            for share in torch.tensor_split(torch.arange(len(pairs)), self.updates_per_batch):
                chunk = [pairs[i] for i in share.tolist()]
                part = collate(chunk or placeholder)
                part["pair_weight"] = torch.full((len(chunk or placeholder),), float(bool(chunk)))
                part["ref_log_probs"] = answer_log_probs(getattr(engine, "module", engine), part).cpu()
                out.append({key: value.to(engine.device) for key, value in part.items()})
        return out
