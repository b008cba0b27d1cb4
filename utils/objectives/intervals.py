"""95% intervals of step 3's held-out figures, so that a reader can tell a gain from the luck of the problems drawn:
Wilson's interval for a share (answers right, answers that end with the EOS), the normal one for a mean (answer
length, KL to the reference)."""
from __future__ import annotations

import math

Z95 = 1.959963984540054


def share_interval(hits: int, n: int) -> list[float]:
    """Wilson's score interval: unlike p ± z·se it stays inside [0, 1], and is not a point at 0 or n hits."""
    p, z2 = hits / n, Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def mean_interval(values: list[float]) -> list[float]:
    """The mean ± 1.96 standard errors, from the sample standard deviation."""
    n, mean = len(values), sum(values) / len(values)
    if n < 2:
        return [mean, mean]
    half = Z95 * math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)
    return [mean - half, mean + half]


def held_out_intervals(merged: dict[str, list]) -> dict[str, list[float]]:
    """The intervals of one evaluation's figures, from its per-answer values: `accuracy` and `greedy_accuracy` over
    the answers math_answer applies to (as the figures are), where it is a reward function."""
    intervals = {"eos_share": share_interval(sum(map(bool, merged["ended"])), len(merged["ended"])),
                 "answer_length": mean_interval([float(v) for v in merged["length"]])}
    if "kl" in merged:
        intervals["kl_to_reference"] = mean_interval(merged["kl"])
    for key, column in (("accuracy", "reward_math_answer"), ("greedy_accuracy", "greedy_reward_math_answer")):
        applied = [v for v in merged.get(column, []) if v is not None]
        if applied:
            intervals[key] = share_interval(sum(v >= 1.0 for v in applied), len(applied))
    return {key: [round(low, 4), round(high, 4)] for key, (low, high) in intervals.items()}
