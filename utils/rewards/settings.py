"""The checkable-reward flags' mistakes, refused with the other flags before anything heavy loads, and the weights
they give each reward."""
from __future__ import annotations

import argparse
import math
from collections import Counter

from utils.errors import UserError
from utils.rewards.builtin import make
from utils.rewards.loading import parse_entry


def _weighted(args: argparse.Namespace) -> list[str]:
    """What --reward_weights weighs, in order: each --reward_funcs entry, then the reward model's score when there is
    one, then the reward server's when there is one."""
    return ([f"the --reward_funcs entry {text}" for text in args.reward_funcs]
            + ["the reward model's score"] * bool(args.reward_model_name_or_path)
            + ["the reward server's"] * bool(args.reward_url))


def _weights(args: argparse.Namespace) -> list[float]:
    return [1.0] * len(_weighted(args)) if args.reward_weights is None else list(args.reward_weights)


def function_weights(args: argparse.Namespace) -> list[float]:
    """The weights of the --reward_funcs entries, in their order."""
    return _weights(args)[:len(args.reward_funcs)]


def reward_model_weight(args: argparse.Namespace) -> float:
    """The weight of the reward model's score: the --reward_weights value after the functions' ones."""
    if not args.reward_model_name_or_path:
        raise ValueError("no reward model is given, so it has no weight")
    return _weights(args)[len(args.reward_funcs)]


def remote_weight(args: argparse.Namespace) -> float:
    """The weight of --reward_url's rewards: the last --reward_weights value."""
    if not args.reward_url:
        raise ValueError("no reward server is given, so it has no weight")
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
    weighted = _weighted(args)
    if args.reward_weights is not None and len(args.reward_weights) != len(weighted):
        raise UserError(f"--reward_weights: {len(args.reward_weights)} weights given, {len(weighted)} expected, one "
                        f"for each of: {'; '.join(weighted)}")
    if args.reward_url and args.reward_model_name_or_path and args.reward_weights is None:
        raise UserError("--reward_url and a reward model (--critic_model_name_or_path) both score every answer: say "
                        "how to weigh them with --reward_weights (the reward model's weight, then the server's)")
    if args.reward_normalization != "none" and (args.reward_funcs or args.reward_url):
        raise UserError(f"--reward_normalization {args.reward_normalization} shapes a reward model's scores used "
                        "alone; with --reward_funcs or --reward_url the reward is their weighted sum: set the "
                        "weights instead")
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
