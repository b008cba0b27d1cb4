"""DPO on preference pairs: the policy learns to raise the log-probability of the chosen answer over the rejected
one, relative to a frozen reference, with no reward model and no sampling.

Each answer's log-probability is summed over its own tokens (EOS included), given its prompt. By default a pair is
one row `[shared start, chosen rest, rejected rest]` with step 2's mask and positions, so the prompt is computed
once for both answers, in the policy's pass and in the reference's; --no_shared_prompt runs two sequences instead.
The loss (losses.dpo_loss) compares h = (log pi - log pi_ref)(chosen) - (log pi - log pi_ref)(rejected) with 0.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from utils import distributed as dist
from utils.engine.loop import Objective, eval_batches
from utils.models.loading import additive_mask
from utils.models.lora import WithoutAdapters
from utils.models.shared_prompt import shared_length, shared_rows
from utils.objectives.losses import dpo_loss

Pair = dict[str, list]  # chosen, rejected: token ids; starts: where each answer starts; ref: precomputed log-probs


def _answer_index(pairs: list[Pair], where: Callable[[int, int, int], int]) -> dict[str, torch.Tensor]:
    """For chosen answers (pairs 0..P-1), then rejected ones, and each of their tokens: the row position whose
    logits predict it (`where(pair, side, token index)` places a token of a sequence in its row), the token itself,
    and a mask over the answer's length."""
    answers = [(i, side, pair[name], pair["starts"][side]) for side, name in enumerate(("chosen", "rejected"))
               for i, pair in enumerate(pairs)]
    width = max(len(ids) - start for _, _, ids, start in answers)
    predict_at = torch.zeros((len(answers), width), dtype=torch.long)
    targets = torch.zeros((len(answers), width), dtype=torch.long)
    mask = torch.zeros((len(answers), width), dtype=torch.bool)
    for a, (i, side, ids, start) in enumerate(answers):
        n = len(ids) - start
        predict_at[a, :n] = torch.tensor([where(i, side, j - 1) for j in range(start, len(ids))])
        targets[a, :n] = torch.tensor(ids[start:])
        mask[a, :n] = True
    return {"predict_at": predict_at, "targets": targets, "answer_mask": mask}


def collate_preferences(pairs: list[Pair], pad_id: int, shared: bool = True) -> dict[str, torch.Tensor]:
    """A batch of pairs for answer_log_probs: one row per pair that computes the shared start once, or (shared
    False) chosen rows then rejected rows, right-padded. Precomputed reference log-probabilities ride along."""
    batch: dict[str, torch.Tensor]
    if shared:
        common = [shared_length(p["chosen"], p["rejected"]) for p in pairs]
        ids, positions, mask = shared_rows(
            [(p["chosen"][:n], [p["chosen"][n:], p["rejected"][n:]]) for p, n in zip(pairs, common)], pad_id)

        def where(i: int, side: int, j: int) -> int:
            return j if side == 0 or j < common[i] else len(pairs[i]["chosen"]) + j - common[i]

        rows = torch.arange(len(pairs)).repeat(2)
        batch = {"input_ids": ids, "position_ids": positions, "attention_mask": mask}
        used = sum(len(p["chosen"]) + len(p["rejected"]) - n for p, n in zip(pairs, common))
    else:
        seqs = [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1

        def where(i: int, side: int, j: int) -> int:
            return j

        rows = torch.arange(len(seqs))
        batch = {"input_ids": ids, "attention_mask": mask}
        used = sum(map(len, seqs))
    batch |= _answer_index(pairs, where) | {"sequence_row": rows, "num_tokens": torch.tensor(used)}
    if "ref" in pairs[0]:
        batch["ref_log_probs"] = torch.tensor([p["ref"][side] for side in (0, 1) for p in pairs], dtype=torch.float)
    return batch


def keeps_logits(model: nn.Module) -> bool:
    """Whether the causal LM inside `model` (itself, its engine, or the actor without adapters) can project only
    given positions of each row onto the vocabulary (transformers 5's `logits_to_keep`)."""
    inner = model.model if isinstance(model, WithoutAdapters) else getattr(model, "module", model)
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


def answer_log_probs(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(2P,) each answer's summed log-probability under `model`: chosen answers, then rejected ones. Only the
    positions that predict an answer token go through the output layer and the softmax, each once (in a shared row
    both answers' first tokens are predicted at the prompt's last position), where the model allows it: over a large
    vocabulary that layer costs more than the rest of a small model."""
    device = dist.input_device(model)
    mask = batch["attention_mask"].to(device)
    if mask.dim() == 4:
        mask = additive_mask(mask, next(model.parameters()).dtype)
    predict_at, answers = batch["predict_at"].to(device), batch["answer_mask"].to(device)
    rows = batch["sequence_row"].to(device)[:, None].expand_as(predict_at)
    keep = torch.zeros(batch["input_ids"].shape, dtype=torch.bool, device=device)
    keep[rows[answers], predict_at[answers]] = True
    inputs = {"input_ids": batch["input_ids"].to(device), "attention_mask": mask,
              "position_ids": batch["position_ids"].to(device) if "position_ids" in batch else None}
    if keeps_logits(model):
        logits = model(**inputs, logits_to_keep=keep).logits  # (kept positions, vocabulary), row by row
    else:
        logits = model(**inputs).logits[keep]
    log_probs = F.log_softmax(logits.float(), dim=-1)
    kept_index = (keep.view(-1).cumsum(0) - 1).view(keep.shape)[rows, predict_at]  # pads land anywhere: masked
    taken = log_probs[kept_index, batch["targets"].to(device)]
    return (taken * answers).sum(dim=1)


def preference_stats(log_probs: torch.Tensor, ref_log_probs: torch.Tensor, beta: float) -> dict[str, torch.Tensor]:
    """Per pair: the implicit rewards beta * (log pi - log pi_ref) of chosen and rejected, and the log-probs."""
    chosen, rejected = (beta * (log_probs - ref_log_probs)).chunk(2)
    logps_chosen, logps_rejected = log_probs.chunk(2)
    return {"rewards_chosen": chosen, "rewards_rejected": rejected, "margin": chosen - rejected,
            "accuracy": (chosen > rejected).float(), "logps_chosen": logps_chosen, "logps_rejected": logps_rejected}


@dataclass
class DPOObjective(Objective):
    """A micro-batch of pairs in, the mean DPO loss of its pairs out (weighted: pairs of weight 0 are placeholders
    that keep every process's passes in step). The reference's log-probs come precomputed with the batch, or from
    `reference`."""

    beta: float
    kind: str = "sigmoid"
    label_smoothing: float = 0.0
    reference: nn.Module | None = None

    def reference_log_probs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "ref_log_probs" in batch:
            return batch["ref_log_probs"]
        with torch.no_grad():
            return answer_log_probs(self.reference, batch)

    def pair_losses(self, model: nn.Module, batch: dict[str, torch.Tensor]
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        log_probs = answer_log_probs(model, batch)
        ref = self.reference_log_probs(batch).to(log_probs.device)
        chosen, rejected = (log_probs - ref).chunk(2)
        return (dpo_loss(chosen, rejected, self.beta, self.kind, self.label_smoothing),
                preference_stats(log_probs.detach(), ref, self.beta))

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Normalized over the weighted pairs of the micro-batch on all processes, so that 1 and N processes take
        the same step."""
        losses, stats = self.pair_losses(model, batch)
        weight = batch.get("pair_weight", torch.ones_like(losses)).to(losses.device)
        pairs = dist.sum_across_ranks(weight.sum()).clamp(min=1)
        shown = {key: ((value * weight).sum() / weight.sum().clamp(min=1)).item() for key, value in stats.items()}
        return (losses * weight).sum() * dist.world_size() / pairs, shown

    def evaluate(self, model: nn.Module, loader: DataLoader, max_batches: int) -> dict[str, float]:
        """Loss, preference accuracy (ties count as wrong), implicit rewards and their margin, and the log-probs,
        over every process's held-out pairs, each named pair_*."""
        module = getattr(model, "module", model)
        parts: dict[str, list[torch.Tensor]] = {}
        for batch in eval_batches(model, loader, max_batches):
            losses, stats = self.pair_losses(module, batch)
            for key, value in (stats | {"loss": losses}).items():
                parts.setdefault(key, []).append(value.detach().double().cpu())
        local = {key: torch.cat(values) for key, values in parts.items()}
        merged = {key: torch.cat([part[key] for part in dist.gather_objects(local) if key in part]) for key in local}
        return {f"pair_{key}": value.mean().item() for key, value in merged.items()} | {"pairs": len(merged["loss"])}
