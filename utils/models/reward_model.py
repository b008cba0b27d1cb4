"""Where a reward model reads its score, and per-token rewards from any *ForSequenceClassification model."""
from __future__ import annotations

import torch
from torch import nn

from utils.models.loading import additive_mask


def score_positions(input_ids: torch.Tensor, attention_mask: torch.Tensor, score_token: str, pad_id: int,
                    num_padding_at_beginning: int) -> torch.Tensor:
    """The index of the scored token in each row: the one score rule (docs/reward-scores.md).

    end: the last attended token, for left or right padding.
    first_pad: DeepSpeed-Chat's rule: skip the first `num_padding_at_beginning` pad ids, score just before the next
    one; a row without one is scored at its last position.
    """
    width = input_ids.size(1)
    positions = torch.arange(width, device=input_ids.device).expand_as(input_ids)
    if score_token == "end":
        return (positions * attention_mask.long()).argmax(dim=1)
    if score_token != "first_pad":
        raise ValueError(f"unknown score_token {score_token!r}")
    is_pad = input_ids == pad_id
    occurrence = is_pad.long().cumsum(dim=1)  # 1 at the first pad id, 2 at the second, ...
    target = is_pad & (occurrence == num_padding_at_beginning + 1)
    found = target.any(dim=1)
    first = torch.where(target, positions, width).min(dim=1).values
    return torch.where(found, first - 1, torch.full_like(first, width - 1))


class RewardModel(nn.Module):
    """Applies the model's `score` head to every position, so the losses can read any token's reward.

    The wrapped Hugging Face model is what gets exported; its own pooling (rightmost non-pad token) then picks
    the same position as `score_positions`, which keeps pipeline scores equal to training scores.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """A (rows, width) padding mask, or a (rows, 1, width, width) boolean mask with position ids (shared-prompt
        rows)."""
        backbone = getattr(self.model, self.model.base_model_prefix)
        if attention_mask.dim() == 4:
            attention_mask = additive_mask(attention_mask, backbone.get_input_embeddings().weight.dtype)
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=False).last_hidden_state
        return self.model.score(hidden).squeeze(-1)
