"""Pairwise reward losses, named by --loss."""
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
