"""The built-in preference pairs: reproducible, well-formed, balanced, and right where they claim to be; the SFT
rows with a share of flawed answers, and the rule-based judge that names those flaws; the arithmetic problems with
their answers (synthetic_math)."""
from __future__ import annotations

import re
from collections import Counter

import pytest

from utils.data.sources import FIELDS as FIELD_NAMES
from utils.data.sources import PROMPT_FIELDS, SFT_FIELDS, read_source
from utils.data.synthetic import CATEGORIES, GENERIC_FLAWS, flaw, flawed_share, generate_pairs, generate_sft_rows
from utils.data.synthetic_math import generate_math_problems
from utils.errors import UserError

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


@pytest.fixture(scope="module")
def sft_rows() -> list[dict[str, str]]:
    return generate_sft_rows(2000, seed=0)


def test_sft_rows_flawed_share_and_kinds(sft_rows: list[dict[str, str]]) -> None:
    counts = Counter(row["category"] for row in sft_rows)
    assert set(counts) == {"good", *GENERIC_FLAWS}
    assert abs(1 - counts["good"] / len(sft_rows) - 0.25) <= 0.03, counts
    flawed = len(sft_rows) - counts["good"]
    for kind in GENERIC_FLAWS:
        assert abs(counts[kind] / flawed - 1 / 3) <= 0.06, counts
    half = Counter(row["category"] for row in generate_sft_rows(2000, seed=0, flawed_share=0.5))
    assert abs(half["good"] / 2000 - 0.5) <= 0.03, half
    assert {row["category"] for row in generate_sft_rows(50, flawed_share=0)} == {"good"}
    with pytest.raises(ValueError, match="flawed_share"):
        generate_sft_rows(10, flawed_share=1.5)


def test_sft_rows_are_seeded_and_well_formed(sft_rows: list[dict[str, str]]) -> None:
    assert generate_sft_rows(2000, seed=0) == sft_rows
    assert generate_sft_rows(200, seed=1) != sft_rows[:200]
    assert generate_sft_rows(37, seed=0) == sft_rows[:37]  # the held-out tenth of a source is the rows after n
    for row in sft_rows:
        assert set(row) == {"prompt", "chosen", "category"}
        assert all(isinstance(v, str) and v and v == v.strip() for v in row.values()), row


def test_good_sft_answers_are_right(sft_rows: list[dict[str, str]]) -> None:
    sums = [row for row in sft_rows if SUM.search(row["prompt"])]
    assert len(sums) > 100
    for row in sums:
        if row["category"] == "good":
            assert _numbers(row["chosen"])[-1] == _result(row["prompt"]), row
    pairs_chosen = {row["chosen"] for row in generate_pairs(600, seed=0)}
    assert not any(row["chosen"] in pairs_chosen for row in sft_rows if row["category"] != "good")


def test_judge_names_every_flaw_of_the_sft_rows_and_no_good_answer(sft_rows: list[dict[str, str]]) -> None:
    for row in sft_rows:
        expected = None if row["category"] == "good" else row["category"]
        assert flaw(row["prompt"], row["chosen"]) == expected, row
    share = 1 - sum(row["category"] == "good" for row in sft_rows) / len(sft_rows)
    assert flawed_share([r["prompt"] for r in sft_rows], [r["chosen"] for r in sft_rows]) == share


def test_judge_on_pairs_flags_generic_flaws_only(rows: list[dict[str, str]]) -> None:
    """Wrong facts and off-topic replies are for the reward model; the judge does not claim to see them."""
    for row in rows:
        assert flaw(row["prompt"], row["chosen"]) is None, row
        expected = row["category"] if row["category"] in GENERIC_FLAWS else None
        assert flaw(row["prompt"], row["rejected"]) == expected, row


@pytest.mark.parametrize("answer, expected", [
    ("I think I think I think I think.", "repetition"),
    ("the answer is the answer is the answer is", "repetition"),
    ("Rio de Janeiro Rio de Janeiro Rio de Janeiro", "repetition"),
    ("Paris Paris Paris Par", "repetition"),  # cut off by the length limit
    ("Um, um. UM", "repetition"),
    ("well well", "repetition"),  # nothing but one filler, twice
    ("let me see let me see let m", "repetition"),
    ("", "empty"),
    ("  \n\t ", "empty"),
    ("...", "empty"),
    ("Figure it OUT   yourself.", "rude"),
    ("  what a stupid question!! The capital of", "rude"),  # a trailing fragment
    ("Look it up yourself, I’m busy", "rude"),
    ("I don ' t know , sorry .", "non_answer"),  # as a tokenizer may space a decoded contraction
    ("hard to say", "non_answer"),
    ("Sure. The capital of France is Paris.", None),
    ("  Of course.  8 plus 7 is 15. ", None),
    ("It has four legs.", None),
    ("I think it is Paris.", None),
    ("Well, it is Wellington.", None),
])
def test_judge_on_generated_text(answer: str, expected: str | None) -> None:
    assert flaw("What is the capital of France?", answer) == expected


def test_flawed_share_counts_flagged_answers() -> None:
    prompts = ["What is 2 plus 2?"] * 4
    assert flawed_share(prompts, ["2 plus 2 is 4.", "", "Not my problem.", "That makes 4."]) == 0.5
    with pytest.raises(ValueError, match="as many prompts as answers, at least one, got 4 and 1"):
        flawed_share(prompts, ["4."])
    with pytest.raises(ValueError, match="got 0 and 0"):
        flawed_share([], [])


def _math_result(prompt: str) -> int:
    """The result the problem's words ask for, worked out from the text alone."""
    a, b = (int(n) for n in re.findall(r"\d+", prompt))
    if re.search(r"\bplus\b|\bbuys\b|\bputs in\b", prompt):
        return a + b
    if re.search(r"\bminus\b|\bgives\b|\btakes out\b", prompt):
        return a - b
    assert re.search(r"\btimes\b|\bin each\b|\bpiles? of\b", prompt), prompt
    return a * b


def test_synthetic_math_answers_are_right_and_seeded() -> None:
    rows = generate_math_problems(3000, seed=0)
    assert rows == generate_math_problems(3000, seed=0) and rows[:40] == generate_math_problems(40, seed=0)
    assert rows != generate_math_problems(3000, seed=1)
    for row in rows:
        assert set(row) == {"prompt", "answer"}
        assert all(0 <= int(n) <= 9 for n in re.findall(r"\d+", row["prompt"])), row
        assert row["answer"] == str(_math_result(row["prompt"])) and int(row["answer"]) >= 0, row
    bare = [r["prompt"] for r in rows if SUM.search(r["prompt"])]  # the forms the demo's step-1 data answers
    assert 0.4 < len(bare) / len(rows) < 0.6
    assert {p.split()[0] for p in bare} == {"What", "How", "Can"}
    word = {re.sub(r"\d+|[A-Z][a-z]+ (?=has|puts|takes|makes)", "_", r["prompt"]) for r in rows} - set(bare)
    assert len(word) > 20  # word problems in several templates, objects and names


def test_synthetic_math_held_out_tenth_never_repeats_a_train_problem() -> None:
    for n in (50, 4000):
        splits, skipped = read_source(f"synthetic_math:{n}", PROMPT_FIELDS)
        train, test = splits["train"], splits["test"]
        assert skipped == 0 and len(train) == n and len(test) == n // 10  # a full tenth, even at 4000
        assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
        assert len({r["prompt"] for r in test}) == len(test)
        assert read_source(f"synthetic_math:{n}", PROMPT_FIELDS)[0] == splits


def test_synthetic_math_gives_step_1_the_right_answer_in_the_demo_style() -> None:
    problems = read_source("synthetic_math:300", PROMPT_FIELDS)[0]
    sft, skipped = read_source("synthetic_math:300", SFT_FIELDS)
    assert skipped == 0 and {split: len(rows) for split, rows in sft.items()} == {"train": 300, "test": 30}
    for split, rows in sft.items():  # the same problems, in order, each answered with its own result
        assert [r["prompt"] for r in rows] == [r["prompt"] for r in problems[split]]
        for row, problem in zip(rows, problems[split]):
            assert row == {"prompt": problem["prompt"], "chosen": f"The answer is {problem['answer']}."}
    assert sft["train"][0]["chosen"] == f"The answer is {_math_result(sft['train'][0]['prompt'])}."


def test_synthetic_math_is_refused_by_steps_that_read_pairs() -> None:
    # steps 2 and DPO: no rejected answer to learn from (the bug this catches: a pair step training on chosen alone)
    with pytest.raises(UserError, match="synthetic_math:50: synthetic_math has no rejected answers; it is arithmetic "
                                        "problems with one right answer each, for step 1 and for step 3's checkable "
                                        "rewards"):
        read_source("synthetic_math:50", FIELD_NAMES)
    with pytest.raises(UserError, match="expected synthetic_math:N with N at least 1"):
        read_source("synthetic_math:0", PROMPT_FIELDS)
