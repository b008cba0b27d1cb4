"""Reward-model evaluation figures from chosen and rejected scores."""
from __future__ import annotations

import torch

from utils.objectives.losses import bt_loss


def pair_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, float]:
    """Accuracy counts ties as wrong: a model that scores everything alike has learnt nothing."""
    chosen, rejected = chosen.double(), rejected.double()
    rewards = torch.cat([chosen, rejected])
    return {
        "accuracy": (chosen > rejected).double().mean().item(),
        "loss": bt_loss(chosen, rejected).item(),
        "chosen_mean": chosen.mean().item(),
        "chosen_std": chosen.std(unbiased=False).item(),
        "rejected_mean": rejected.mean().item(),
        "rejected_std": rejected.std(unbiased=False).item(),
        "margin_mean": (chosen - rejected).mean().item(),
        "reward_mean": rewards.mean().item(),
        "reward_std": rewards.std(unbiased=False).item(),
        "pairs": len(chosen),
    }
