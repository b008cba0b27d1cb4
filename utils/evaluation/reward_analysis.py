"""What a reward model's scores on preference pairs say before it is trusted in RLHF, beyond accuracy: calibration,
length effects, the extremes, and the constants that normalize rewards."""
from __future__ import annotations

import torch


def calibration(chosen: torch.Tensor, rejected: torch.Tensor, bins: int = 10) -> dict:
    """sigmoid(margin) as the predicted chance that the first text is preferred, against how often it is.

    Each pair counts in both orders (chosen first: preferred; rejected first: not), so the observed rate is
    meaningful in every bin. ece is the pair-weighted mean gap between prediction and observation.
    """
    margin = (chosen - rejected).double()
    predicted = torch.sigmoid(torch.cat([margin, -margin]))
    observed = torch.cat([torch.ones_like(margin), torch.zeros_like(margin)])
    which = (predicted * bins).long().clamp(max=bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            p, o = predicted[mask].mean().item(), observed[mask].mean().item()
            rows.append({"bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}", "count": int(mask.sum()), "predicted": p,
                         "observed": o})
            ece += mask.sum().item() / len(predicted) * abs(p - o)
    return {"bins": rows, "ece": ece}


def accuracy_by_length(chosen: torch.Tensor, rejected: torch.Tensor, lengths: list[int], buckets: int = 4
                       ) -> list[dict]:
    """Accuracy (ties wrong) in equal-count buckets of pair length (tokens of both texts), shortest first."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    out = []
    for b in range(buckets):
        part = order[b * len(order) // buckets:(b + 1) * len(order) // buckets]
        if part:
            idx = torch.tensor(part)
            out.append({"tokens": f"{lengths[part[0]]}-{lengths[part[-1]]}", "pairs": len(part),
                        "accuracy": (chosen[idx] > rejected[idx]).double().mean().item()})
    return out


def longer_answer_wins(chosen_lengths: list[int], rejected_lengths: list[int]) -> float:
    """The accuracy of picking the longer text (ties wrong): the length-bias baseline to quote beside accuracy."""
    return sum(c > r for c, r in zip(chosen_lengths, rejected_lengths)) / len(chosen_lengths)


def balance(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, float]:
    """How the two groups sit around the median of all scores: a useful reward puts chosen above, rejected below."""
    median = torch.cat([chosen, rejected]).double().median().item()
    return {"median": median, "chosen_above_median": (chosen > median).double().mean().item(),
            "rejected_below_median": (rejected < median).double().mean().item()}


def extremes(scores: list[float], labels: list[str], k: int) -> dict[str, list[dict]]:
    """The k highest and k lowest scored texts, to read by eye: reward hacking shows up here first."""
    ranked = sorted(zip(scores, labels), key=lambda x: x[0])
    pick = [{"score": s, "text": t} for s, t in ranked]
    return {"top": pick[::-1][:k], "bottom": pick[:k]}


def normalization(scores: list[float]) -> dict[str, float]:
    """z-score (mean, std) and min-max constants, fitted on the evaluated scores, to scale rewards for RLHF."""
    t = torch.tensor(scores, dtype=torch.float64)
    return {"mean": t.mean().item(), "std": t.std(unbiased=False).item(), "min": t.min().item(),
            "max": t.max().item(), "fitted_on": len(scores)}


def normalize(score: float, constants: dict[str, float]) -> dict[str, float]:
    """A score as z = (s - mean) / std and as min-max scaled to [-1, 1] over the fitted range."""
    span = constants["max"] - constants["min"]
    return {"z": (score - constants["mean"]) / constants["std"] if constants["std"] else 0.0,
            "minmax": 2 * (score - constants["min"]) / span - 1 if span else 0.0}
