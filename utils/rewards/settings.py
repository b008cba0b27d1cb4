"""The checkable-reward flags' mistakes, refused with the other flags before anything heavy loads, and the weights
they give each reward."""
from __future__ import annotations

import argparse
import math
from collections import Counter

from utils.errors import UserError
from utils.rewards.builtin import make
from utils.rewards.loading import parse_entry


def _weight_count(args: argparse.Namespace) -> int:
    """One weight per --reward_funcs entry, then one for the reward model's score when there is one."""
    return len(args.reward_funcs) + bool(args.reward_model_name_or_path)


def _weights(args: argparse.Namespace) -> list[float]:
    return [1.0] * _weight_count(args) if args.reward_weights is None else list(args.reward_weights)


def function_weights(args: argparse.Namespace) -> list[float]:
    """The weights of the --reward_funcs entries, in their order."""
    return _weights(args)[:len(args.reward_funcs)]


def reward_model_weight(args: argparse.Namespace) -> float:
    """The weight of the reward model's score (the last --reward_weights value when a reward model is given)."""
    if not args.reward_model_name_or_path:
        raise ValueError("no reward model is given, so it has no weight")
    return _weights(args)[-1]


def check_reward_flags(args: argparse.Namespace) -> None:
    """--reward_funcs entries that cannot be resolved, duplicate names, a weight count that does not match, and
    settings of built-ins that are missing, malformed or given without their built-in."""
    entries = [parse_entry(text) for text in args.reward_funcs]
    twice = [name for name, n in Counter(e.name for e in entries).items() if n > 1]
    if twice:
        raise UserError(f"--reward_funcs: two entries are called {twice[0]} "
                        f"({', '.join(e.text for e in entries if e.name == twice[0])}); each function's figures are "
                        "logged by its name, so give them different names")
    expected = _weight_count(args)
    if args.reward_weights is not None and len(args.reward_weights) != expected:
        model = " and 1 for the reward model's score" if args.reward_model_name_or_path else ""
        raise UserError(f"--reward_weights: {len(args.reward_weights)} weights given, {expected} expected: "
                        f"{len(args.reward_funcs)} for the --reward_funcs entries{model}")
    if not all(math.isfinite(w) for w in args.reward_weights or []):
        raise UserError(f"--reward_weights {' '.join(map(str, args.reward_weights))}: each weight must be finite")
    _check_builtin_settings(args, [e.target for e in entries if e.kind == "builtin"])
    if args.reward_timeout <= 0:
        raise UserError(f"--reward_timeout {args.reward_timeout}: a request needs more than 0 seconds")
    if args.reward_retries < 0:
        raise UserError(f"--reward_retries {args.reward_retries}: the tries after a failed request are 0 or more")


def _check_builtin_settings(args: argparse.Namespace, builtins: list[str]) -> None:
    """Build each built-in now (its settings are checked as it is built), and refuse a setting without its
    built-in: ignoring it would give another run than the one asked for."""
    for name in builtins:
        make(name, format_regex=args.format_regex, max_answer_seq_len=args.max_answer_seq_len,
             overlong_buffer=args.overlong_buffer)
    if args.format_regex is not None and "format" not in builtins:
        raise UserError("--format_regex is the pattern of the format reward: add format to --reward_funcs, or drop "
                        "--format_regex")
    if args.overlong_buffer is not None and "overlong" not in builtins:
        raise UserError("--overlong_buffer sets the overlong penalty's ramp: add overlong to --reward_funcs, or drop "
                        "--overlong_buffer")
