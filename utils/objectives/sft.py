"""What step 1 adds to the shared engine: the language-modelling loss on labelled tokens, and perplexity."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from utils.data.encoding import IGNORE
from utils.distributed import gather_objects, sum_across_ranks, world_size
from utils.engine.loop import Objective, eval_batches
from utils.models.loading import additive_mask


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed negative log-likelihood of every labelled token given the tokens before it, and their count."""
    targets = labels[:, 1:].reshape(-1)
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), targets, ignore_index=IGNORE, reduction="sum")
    return nll, (targets != IGNORE).sum()


@dataclass(frozen=True)
class SFTObjective(Objective):
    compute_fp32_loss: bool = False

    def _nll(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        mask = batch["attention_mask"]
        if mask.dim() == 4:  # packed segments
            mask = additive_mask(mask, next(model.parameters()).dtype)
        logits = model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=batch.get("position_ids")).logits
        return token_nll(logits.float() if self.compute_fp32_loss else logits, batch["labels"])

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The mean over the labelled tokens of the micro-batch on all ranks together: DeepSpeed averages the
        gradients over ranks, so the update does not depend on how the global batch is split among processes."""
        nll, count = self._nll(model, batch)
        tokens = sum_across_ranks(count.float()).clamp(min=1)
        return nll * world_size() / tokens, {}

    def evaluate(self, model: nn.Module, loader: DataLoader, max_batches: int) -> dict[str, float]:
        """Loss and perplexity per labelled token (pads and masked prompts excluded), over every rank's share."""
        nll, count = 0.0, 0
        for batch in eval_batches(model, loader, max_batches):
            batch_nll, batch_count = self._nll(model, batch)
            nll, count = nll + batch_nll.double().item(), count + int(batch_count)
        parts = gather_objects((nll, count))
        nll, count = sum(p[0] for p in parts), sum(p[1] for p in parts)
        loss = nll / max(count, 1)
        return {"loss": loss, "perplexity": math.exp(loss) if loss < 700 else math.inf, "tokens": count}
