"""The losses of every step: pairwise reward losses (--loss), and step 3's policy-gradient loss and KL estimators."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def bt_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry: the mean of -log sigmoid(r_chosen - r_rejected)."""
    return -F.logsigmoid(chosen - rejected).mean()


def dschat_loss(values: torch.Tensor, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """DeepSpeed-Chat's loss: per pair, the mean of -log sigmoid(v_chosen - v_rejected) over the tokens from the
    first differing token to the later of the two scored tokens (inclusive).

    `values`, `input_ids` and `positions` hold the chosen rows, then the rejected rows, as collate_pairs lays them out.
    A pair whose token rows are identical contributes its last position only, as in DeepSpeed-Chat.
    """
    n = values.size(0) // 2
    total = values.new_zeros(())
    for i in range(n):
        c_ids, r_ids = input_ids[i], input_ids[n + i]
        differ = (c_ids != r_ids).nonzero()
        if len(differ) == 0:
            start, end = values.size(1) - 1, values.size(1)
        else:
            start, end = differ[0].item(), max(positions[i].item(), positions[n + i].item()) + 1
        total = total - F.logsigmoid(values[i, start:end] - values[n + i, start:end]).mean()
    return total / n


def kl_k1(log_probs: torch.Tensor, ref_log_probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per answer, the summed log-ratio to the reference over its actions: the KL estimate the penalty uses. A
    single answer's value can be negative; its expectation cannot."""
    return ((log_probs - ref_log_probs) * mask).sum(dim=1)


def kl_k3(log_probs: torch.Tensor, ref_log_probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per answer, the summed (r - 1) - log r with r = pi_ref / pi: never negative, so it shows drift that k1's
    noise hides."""
    log_ratio = ref_log_probs - log_probs
    return ((log_ratio.exp() - 1 - log_ratio) * mask).sum(dim=1)


def clipped_policy_loss(log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, cliprange: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The summed -min(rho A, clip(rho, 1 - eps, 1 + eps) A) over actions, with rho = pi / pi_old and one advantage
    per answer (rows,); also the clipped share of actions and the ratios. Summed, not averaged: the caller divides
    by the actions of the whole optimizer step."""
    ratio = (log_probs - old_log_probs).exp()
    adv = advantages[:, None]
    per_token = -torch.min(ratio * adv, ratio.clamp(1 - cliprange, 1 + cliprange) * adv)
    clipped = ((ratio - 1).abs() > cliprange).float()
    return (per_token * mask).sum(), (clipped * mask).sum() / mask.sum().clamp(min=1), ratio
