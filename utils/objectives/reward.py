"""What step 2 adds to the shared engine: the pairwise loss on scored tokens, and reward evaluation."""
from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from utils.data.encoding import collate_pairs
from utils.distributed import gather_objects
from utils.engine.loop import Objective, eval_batches
from utils.models.reward_model import score_positions
from utils.models.shared_prompt import collate_shared_prompt
from utils.objectives.losses import bt_loss, dschat_loss
from utils.objectives.metrics import pair_metrics


@dataclass(frozen=True)
class RewardObjective(Objective):
    score_token: str
    pad_id: int
    num_padding_at_beginning: int
    loss: str = "bt"
    center_rewards_coefficient: float = 0.0
    compute_fp32_loss: bool = False

    def scores(self, model: nn.Module, batch: dict[str, torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-token values of every row, each row's scored position, and the scores: chosen ones, then rejected.

        Shared-prompt rows (one per pair) carry their two scored positions in `score_index`.
        """
        values = model(batch["input_ids"], batch["attention_mask"], batch.get("position_ids"))
        if self.compute_fp32_loss:
            values = values.float()
        if "score_index" in batch:
            positions = batch["score_index"]
            return values, positions, values.gather(1, positions).T.reshape(-1)
        positions = score_positions(batch["input_ids"], batch["attention_mask"], self.score_token, self.pad_id,
                                    self.num_padding_at_beginning)
        return values, positions, values.gather(1, positions[:, None]).squeeze(1)

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        values, positions, scores = self.scores(model, batch)
        chosen, rejected = scores.chunk(2)
        if self.loss == "bt":
            loss = bt_loss(chosen, rejected)
        else:
            loss = dschat_loss(values, batch["input_ids"], positions)
        if self.center_rewards_coefficient:
            loss = loss + self.center_rewards_coefficient * ((chosen + rejected) ** 2).mean()
        return loss, {"accuracy": (chosen > rejected).float().mean().item()}

    def evaluate(self, model: nn.Module, loader: DataLoader, max_batches: int) -> dict[str, float]:
        """Metrics over this rank's eval share, gathered from every rank (at most max_batches batches each)."""
        chosen, rejected = [], []
        for batch in eval_batches(model, loader, max_batches):
            c, r = self.scores(model, batch)[2].float().cpu().chunk(2)
            chosen.append(c)
            rejected.append(r)
        local = (torch.cat(chosen) if chosen else torch.empty(0), torch.cat(rejected) if rejected else torch.empty(0))
        parts = gather_objects(local)
        return pair_metrics(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))


def pair_collate(args: argparse.Namespace, pad_id: int) -> tuple[Callable, str]:
    """The batch layout and its name: shared-prompt rows wherever they are exact (the Bradley-Terry loss on end
    tokens; DeepSpeed-Chat's per-token loss and first_pad rule read padding), else two padded sequences."""
    if args.loss == "bt" and args.score_token == "end" and not args.no_shared_prompt and not args.pad_to_max_len:
        return functools.partial(collate_shared_prompt, pad_id=pad_id), "one row per pair, shared prompt computed once"
    width = args.max_seq_len if args.pad_to_max_len else None
    return (functools.partial(collate_pairs, pad_id=pad_id, width=width),
            f"chosen and rejected as two sequences, padded to {'--max_seq_len' if width else 'the longest'}")
