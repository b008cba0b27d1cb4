"""The run's reward functions together: each answer's weighted sum, every function's values checked, and the figures
a run logs of them."""
from __future__ import annotations

import argparse
import math
import numbers
import traceback

from utils.errors import UserError
from utils.rewards.loading import RESERVED, RewardFunction, load_reward_function
from utils.rewards.settings import function_weights


class RewardFunctions:
    """Reward functions and their weights. A function's None for an answer ("does not apply") adds nothing to that
    answer's sum; an answer no function applies to gets 0.0, and `stats` counts it."""

    def __init__(self, functions: list[RewardFunction], weights: list[float]) -> None:
        if len(weights) != len(functions):
            raise UserError(f"{len(weights)} weights for {len(functions)} reward functions")
        self.functions = functions
        self.names = [f.name for f in functions]
        self.weights = [float(w) for w in weights]

    @classmethod
    def from_flags(cls, args: argparse.Namespace) -> RewardFunctions:
        """--reward_funcs, each imported now, with their --reward_weights (the reward model's, if any, left out)."""
        functions = [load_reward_function(entry, format_regex=args.format_regex,
                                          max_answer_seq_len=args.max_answer_seq_len,
                                          overlong_buffer=args.overlong_buffer) for entry in args.reward_funcs]
        return cls(functions, function_weights(args))

    def check_columns(self, available: set[str]) -> None:
        """Refuse rows that lack a column a function needs, or that have a column named as a reserved keyword."""
        clash = sorted(set(RESERVED) & available)
        if clash:
            raise UserError(f"the prompt rows have a column named {clash[0]}, which the rollout passes to reward "
                            f"functions itself ({RESERVED[clash[0]]}); rename the column")
        for function in self.functions:
            missing = [c for c in function.columns if c not in available and c not in RESERVED]
            if missing:
                have = ", ".join(sorted(available)) or "none"
                raise UserError(f"reward function {function.name} ({function.entry}) needs the column {missing[0]}, "
                                f"which the prompt rows lack (their columns: {have})")

    def score(self, prompts: list[str], answers: list[str], columns: dict[str, list],
              answer_lengths: list[int]) -> tuple[list[float], dict[str, list[float | None]]]:
        """Each answer's weighted sum, and each function's values by name. prompts[i], every column's [i] and
        answer_lengths[i] belong to answers[i]."""
        keywords = {**columns, "answer_lengths": answer_lengths}
        for key, values in [("prompts", prompts), *keywords.items()]:
            if len(values) != len(answers):
                raise ValueError(f"{key}: {len(values)} values for {len(answers)} answers")
        totals = [0.0] * len(answers)
        per_function: dict[str, list[float | None]] = {}
        for function, weight in zip(self.functions, self.weights):
            values = _checked_values(function, _called(function, prompts, answers, keywords), len(answers))
            per_function[function.name] = values
            totals = [t if v is None else t + weight * v for t, v in zip(totals, values)]
        return totals, per_function

    @staticmethod
    def stats(per_function: dict[str, list[float | None]]) -> dict[str, float]:
        """Per function, over the answers it applies to: `reward_<name>`, its mean, and `full_marks_<name>`, the
        share scoring 1 or more (for a 0-or-1 check, the share that passed); `applied_<name>`, the share it applies
        to, only when some answers got None. `unscored_answers`: how many answers no function applied to."""
        figures: dict[str, float] = {}
        for name, values in per_function.items():
            applied = [v for v in values if v is not None]
            if applied:
                figures[f"reward_{name}"] = sum(applied) / len(applied)
                figures[f"full_marks_{name}"] = sum(v >= 1.0 for v in applied) / len(applied)
            if len(applied) < len(values):
                figures[f"applied_{name}"] = len(applied) / len(values)
        rows = list(zip(*per_function.values()))
        figures["unscored_answers"] = float(sum(all(v is None for v in row) for row in rows))
        return figures


def _called(function: RewardFunction, prompts: list[str], answers: list[str], keywords: dict[str, list]) -> object:
    """The function's result; an exception it raises becomes one line naming it and where it was raised."""
    try:
        return function(prompts, answers, keywords)
    except Exception as err:
        frame = traceback.extract_tb(err.__traceback__)[-1]
        message = " ".join(str(err).split())
        raise UserError(f"reward function {function.name} ({function.entry}) raised {type(err).__name__}: {message} "
                        f"(at {frame.filename}:{frame.lineno})") from None


def _checked_values(function: RewardFunction, result: object, count: int) -> list[float | None]:
    """One finite number (True and False count as 1 and 0) or None per answer, as floats."""
    where = f"reward function {function.name} ({function.entry})"
    if isinstance(result, (str, bytes, dict)) or not hasattr(result, "__iter__"):
        raise UserError(f"{where} returned a {type(result).__name__}; it must return a list of one float (or None) "
                        "per answer")
    values = list(result)
    if len(values) != count:
        raise UserError(f"{where} returned {len(values)} values for {count} answers")
    checked: list[float | None] = []
    for at, value in enumerate(values):
        if value is not None and not isinstance(value, numbers.Real):
            raise UserError(f"{where} returned {value!r} (a {type(value).__name__}) for answer {at}; each value must "
                            "be a number or None")
        if value is not None and not math.isfinite(value):
            raise UserError(f"{where} returned {value} for answer {at}; each value must be finite")
        checked.append(None if value is None else float(value))
    return checked
