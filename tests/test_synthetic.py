"""The built-in preference pairs: reproducible, well-formed, balanced, and right where they claim to be."""
from __future__ import annotations

import re
from collections import Counter

import pytest

from utils.data.synthetic import CATEGORIES, generate_pairs

FIELDS = {"prompt", "chosen", "rejected", "category"}
SUM = re.compile(r"\b(\d+) (plus|minus|times) (\d+)\?$")
RESULTS = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return generate_pairs(600, seed=0)


def _numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", text)]


def _result(prompt: str) -> int:
    a, op, b = SUM.search(prompt).groups()
    return RESULTS[op](int(a), int(b))


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    assert generate_pairs(200, seed=7) == generate_pairs(200, seed=7)
    assert generate_pairs(200, seed=7) != generate_pairs(200, seed=8)


def test_prefix_of_a_longer_run_is_the_shorter_run() -> None:
    """data.py takes the first rows for training and the rest for evaluation, so n must not reshuffle them."""
    assert generate_pairs(1000, seed=3)[:37] == generate_pairs(37, seed=3)


@pytest.mark.parametrize("n", [0, 1, 5, 6, 7, 13])
def test_returns_exactly_n_rows(n: int) -> None:
    assert len(generate_pairs(n)) == n
    assert generate_pairs(0) == []


def test_rows_are_well_formed(rows: list[dict[str, str]]) -> None:
    for row in rows:
        assert set(row) == FIELDS
        assert all(isinstance(v, str) and v and v == v.strip() for v in row.values()), row
        assert row["chosen"] != row["rejected"], row
        assert row["category"] in CATEGORIES
        assert "Human:" not in row["prompt"] and "Assistant:" not in row["prompt"]
        assert row["prompt"].endswith(("?", ".")), row
        for answer in ("chosen", "rejected"):
            assert len(f"{row['prompt']} {row[answer]}".split()) <= 40, row


def test_categories_all_present_and_balanced(rows: list[dict[str, str]]) -> None:
    counts = Counter(row["category"] for row in rows)
    assert set(counts) == set(CATEGORIES)
    for category in CATEGORIES:
        assert 0.10 <= counts[category] / len(rows) <= 0.25, counts


def test_rows_are_varied(rows: list[dict[str, str]]) -> None:
    assert len({row["prompt"] for row in rows}) > 200
    assert len({row["chosen"] for row in rows}) > 200


def test_arithmetic_chosen_is_right_and_rejected_is_wrong(rows: list[dict[str, str]]) -> None:
    sums = [row for row in rows if SUM.search(row["prompt"])]
    assert len(sums) > 100
    for row in sums:
        assert _numbers(row["chosen"])[-1] == _result(row["prompt"]), row
        if row["category"] == "wrong_arithmetic":
            assert _numbers(row["rejected"])[-1] != _result(row["prompt"]), row
    assert {row["category"] for row in sums} == set(CATEGORIES) - {"wrong_fact"}


def test_wrong_arithmetic_is_mostly_clearly_wrong(rows: list[dict[str, str]]) -> None:
    wrong = [row for row in rows if row["category"] == "wrong_arithmetic"]
    errors = [abs(_numbers(row["rejected"])[-1] - _result(row["prompt"])) for row in wrong]
    assert sum(error >= 10 for error in errors) >= len(wrong) / 2
    assert any(error < 10 for error in errors), "some near misses keep the task realistic"


def test_wrong_fact_keeps_the_phrasing_and_changes_the_answer(rows: list[dict[str, str]]) -> None:
    for row in (r for r in rows if r["category"] == "wrong_fact"):
        assert not SUM.search(row["prompt"]), row
        chosen, rejected = row["chosen"].rstrip(".").split(), row["rejected"].rstrip(".").split()
        start = 0
        while chosen[start] == rejected[start]:
            start += 1
        end = 0
        while chosen[-1 - end] == rejected[-1 - end]:
            end += 1
        assert len(chosen) - start - end <= 3 and len(rejected) - start - end <= 3, row


def test_repetition_repeats_a_phrase(rows: list[dict[str, str]]) -> None:
    for row in (r for r in rows if r["category"] == "repetition"):
        words = row["rejected"].lower().rstrip(".").split()
        assert Counter(words).most_common(1)[0][1] >= 4, row


def test_generic_flawed_replies_are_never_chosen(rows: list[dict[str, str]]) -> None:
    chosen = {row["chosen"] for row in rows}
    flawed = [row for row in rows if row["category"] in ("non_answer", "repetition", "rude")]
    assert flawed and not any(row["rejected"] in chosen for row in flawed)


def test_off_topic_answers_another_question_correctly(rows: list[dict[str, str]]) -> None:
    """An off-topic reply about arithmetic is a right result for other operands than the prompt's."""
    statement = re.compile(r"^(\d+) (plus|minus|times) (\d+) is (\d+)\.$")
    checked = 0
    for row in (r for r in rows if r["category"] == "off_topic"):
        match = statement.match(row["rejected"])
        if match:
            a, op, b, value = match.groups()
            assert RESULTS[op](int(a), int(b)) == int(value), row
            assert not SUM.search(row["prompt"]), row
            checked += 1
    assert checked > 5
