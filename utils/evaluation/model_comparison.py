"""Two reward models on the same benchmark items: where they disagree, whether the difference is more than chance
(McNemar's test), and where each is ahead."""
from __future__ import annotations

import math
from typing import Any


def mcnemar_p(only_a: int, only_b: int) -> float:
    """The exact two-sided McNemar p-value: under the hypothesis that both models are equally good, each item only
    one of them gets right is that one's with chance 1/2, so the smaller count is binomial(only_a + only_b, 1/2).
    Exact at any count, where the chi-squared form needs many disagreements."""
    n = only_a + only_b
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def _entry(pairs: list[tuple[bool, bool, Any]]) -> dict[str, Any]:
    only_a = [name for a, b, name in pairs if a and not b]
    only_b = [name for a, b, name in pairs if b and not a]
    right_a, right_b = sum(a for a, _, _ in pairs), sum(b for _, b, _ in pairs)
    return {"items": len(pairs), "accuracy_a": right_a / len(pairs), "accuracy_b": right_b / len(pairs),
            "only_a": only_a, "only_b": only_b, "p_value": mcnemar_p(len(only_a), len(only_b)),
            "ahead": "a" if right_a > right_b else "b" if right_b > right_a else "even"}


def compare(subsets: list[str], right_a: list[bool], right_b: list[bool], names: list[Any]) -> dict[str, Any]:
    """Per subset and over all items: each model's accuracy, the items only one gets right (by name), McNemar's
    p-value on them, and which model is ahead."""
    by_subset: dict[str, list[tuple[bool, bool, Any]]] = {}
    for subset, a, b, name in zip(subsets, right_a, right_b, names):
        by_subset.setdefault(subset, []).append((a, b, name))
    return {"subsets": {subset: _entry(pairs) for subset, pairs in sorted(by_subset.items())},
            "overall": _entry(list(zip(right_a, right_b, names)))}
