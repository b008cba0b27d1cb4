"""The built-in reward functions, called as every reward function is: f(prompts, answers, **columns), one float, or
None where the function does not apply, per answer.

math_answer and flaw are plain functions; format and overlong are built from their flags (`make`).
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Any, Callable

from utils.data.synthetic import flaw as synthetic_flaw
from utils.errors import UserError

RewardFunc = Callable[..., list]

# The one-line descriptions that --help and the errors show.
BUILTINS: dict[str, str] = {
    "math_answer": "1 when the answer's last \\boxed{...}, or else its last number, equals the row's answer column "
                   "(a GSM8K solution's number after ####), else 0",
    "format": "1 when the whole answer, stripped, matches --format_regex, else 0",
    "overlong": "DAPO's soft length penalty: 0 up to --max_answer_seq_len minus --overlong_buffer tokens, then "
                "falling linearly to -1 at --max_answer_seq_len",
    "flaw": "1 when the demo's rule-based judge finds the answer neither empty, rude, evasive nor looping, else 0",
}

# A number as people write it: an optional sign (not after a word or a closing bracket, so "5-3" ends in 3),
# digits with or without thousands commas, an optional decimal part or fraction. Words ("eight") are not numbers.
_NUMBER = re.compile(r"(?<![\w.)\]}])-?(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:/\d+)?|\.\d+)")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_FRAC = re.compile(r"\\d?frac\{([^{}]*)\}\{([^{}]*)\}")


def last_boxed(text: str) -> str | None:
    """The content of the text's last \\boxed{...}, nested braces matched; None without one (or unclosed)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for at in range(begin, len(text)):
        depth += {"{": 1, "}": -1}.get(text[at], 0)
        if depth < 0:
            return text[begin:at]
    return None


def final_number(text: str) -> str | None:
    """The last number written in the text ("The answer is 8." -> "8"), or None when it has none."""
    found = _NUMBER.findall(text)
    return found[-1] if found else None


def normalize(value: str) -> str:
    """Strip, and drop what does not change the value: $, thousands commas, LaTeX's \\! spacing, a trailing period;
    \\frac{a}{b} becomes a/b."""
    value = _FRAC.sub(r"\1/\2", value.strip().replace("\\$", "").replace("$", "").replace("\\!", ""))
    return _THOUSANDS.sub("", value).strip().rstrip(".").strip()


def as_number(value: str) -> Fraction | None:
    """The exact value of a normalized answer ("8.0", "-3", "2.50", "3/4", "1e3"), or None when it is not one."""
    try:
        return Fraction(value.replace(" ", ""))
    except (ValueError, ZeroDivisionError):
        return None


def same_answer(given: str, expected: str) -> bool:
    """Equal as numbers where both are numbers (so "8.0" == "8" and "1,000" == "1000"), else as stripped strings."""
    given, expected = normalize(given), normalize(expected)
    numbers = as_number(given), as_number(expected)
    if None not in numbers:
        return numbers[0] == numbers[1]
    return given == expected


def reference_answer(value: Any) -> str:
    """The answer a row's `answer` column states: the text after a GSM8K solution's last ####, the content of a
    worked solution's last \\boxed{}, or the value itself (a number in a JSON row counts as its text)."""
    text = str(value)
    if "####" in text:
        return text.rpartition("####")[2]
    boxed = last_boxed(text)
    return text if boxed is None else boxed


def math_answer(prompts: list[str], answers: list[str], *, answer: list, **kwargs: Any) -> list[float | None]:
    """1.0 when the answer's last \\boxed{} (or, without one, its last number) equals the row's answer column, 0.0
    when it differs or there is nothing to compare; None for a row with no answer value."""
    scores: list[float | None] = []
    for given, expected in zip(answers, answer):
        if expected is None:
            scores.append(None)
            continue
        found = last_boxed(given)
        found = final_number(given) if found is None else found
        scores.append(float(found is not None and same_answer(found, reference_answer(expected))))
    return scores


def flaw(prompts: list[str], answers: list[str], **kwargs: Any) -> list[float | None]:
    """1.0 when the demo's rule-based judge (utils.data.synthetic.flaw) finds no flaw in the answer, else 0.0."""
    return [float(synthetic_flaw(p, a) is None) for p, a in zip(prompts, answers)]


def format_reward(pattern: str) -> RewardFunc:
    """1.0 when the whole stripped answer matches the pattern, with `.` matching newlines too (answers run over
    lines), else 0.0."""
    try:
        compiled = re.compile(pattern, re.DOTALL)
    except re.error as err:
        raise UserError(f"--format_regex {pattern!r} does not compile: {err}") from None

    def format(prompts: list[str], answers: list[str], **kwargs: Any) -> list[float | None]:
        return [float(compiled.fullmatch(a.strip()) is not None) for a in answers]

    return format


def overlong_penalty(length: int, max_len: int, buffer: int) -> float:
    """DAPO's soft overlong penalty: 0 up to max_len - buffer tokens, then a linear ramp reaching -1 at max_len (the
    length of an answer cut there), and -1 beyond."""
    free = max_len - buffer
    if length <= free:
        return 0.0
    if length <= max_len:
        return (free - length) / buffer
    return -1.0


def overlong_reward(max_len: int, buffer: int) -> RewardFunc:
    """The overlong penalty of each answer's token count (the reserved keyword answer_lengths)."""
    if not 1 <= buffer <= max_len:
        raise UserError(f"--overlong_buffer {buffer}: the penalty ramps over the last tokens before "
                        f"--max_answer_seq_len {max_len}, so it must lie between 1 and {max_len}")

    def overlong(prompts: list[str], answers: list[str], *, answer_lengths: list[int],
                 **kwargs: Any) -> list[float | None]:
        return [overlong_penalty(n, max_len, buffer) for n in answer_lengths]

    return overlong


def default_overlong_buffer(max_answer_seq_len: int) -> int:
    """A quarter of the answer budget (DAPO reserved a fifth of theirs), at least one token."""
    return max(1, max_answer_seq_len // 4)


def make(name: str, *, format_regex: str | None, max_answer_seq_len: int,
         overlong_buffer: int | None) -> RewardFunc:
    """The built-in reward function `name`, built from its flags."""
    if name == "format":
        if format_regex is None:
            raise UserError("--reward_funcs format: give the pattern a whole answer must match with --format_regex")
        return format_reward(format_regex)
    if name == "overlong":
        buffer = default_overlong_buffer(max_answer_seq_len) if overlong_buffer is None else overlong_buffer
        return overlong_reward(max_answer_seq_len, buffer)
    return {"math_answer": math_answer, "flaw": flaw}[name]
