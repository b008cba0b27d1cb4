"""Built-in arithmetic problems with their answers (`--data_path synthetic_math:N`), for step 3's checkable rewards
and, answered "The answer is N.", for a step-1 warm start that gives a tiny policy something to improve on.

Half of them ask in the forms the demo's step-1 data already answers ("What is 3 plus 5?"), so that its tiny policy
has a chance; the other half are short word problems on the same sums. Operands are single digits, a subtraction
never goes below zero, and the answer is the result as a string, which a reward function checks the policy's answer
against.

There are 33,405 distinct problems: 765 bare questions (3 phrasings of 255 sums: 100 additions, 55 subtractions,
100 multiplications) and 32,640 word problems (2 templates per operation, 8 names, 8 objects). So a held-out split
that never repeats a training problem word for word stays large for N up to tens of thousands, though most of its
bare questions already occur in a large training set, which leaves it mostly word problems.
"""
from __future__ import annotations

import random

from utils.data.synthetic import _OPERATIONS, _SUM_QUESTIONS  # the step-1 demo data's sums, asked the same way

_NAMES = ("Sam", "Ana", "Tom", "Mia", "Leo", "Zoe", "Ben", "Eva")
_OBJECTS = (("apple", "apples"), ("pen", "pens"), ("book", "books"), ("coin", "coins"), ("card", "cards"),
            ("shell", "shells"), ("marble", "marbles"), ("sticker", "stickers"))
# {a} and {b} are counts of objects ("1 apple", "3 apples"), {n} and {m} their bare numbers; {what} the plural.
_WORD_PROBLEMS = {
    "plus": ("{name} has {a} and buys {m} more. How many {what} does {name} have now?",
             "There are {a} in a box. {name} puts in {m} more. How many {what} are in the box now?"),
    "minus": ("{name} has {a} and gives {m} away. How many {what} does {name} have left?",
              "There are {a} in a box. {name} takes out {m}. How many {what} are in the box now?"),
    "times": ("{name} has {n} {bags} with {b} in each. How many {what} does {name} have in all?",
              "{name} makes {n} {piles} of {b} each. How many {what} is that?"),
}
_WORD_SHARE = 0.5


def _count(n: int, noun: tuple[str, str]) -> str:
    return f"{n} {noun[0] if n == 1 else noun[1]}"


def _problem(rng: random.Random) -> dict[str, str]:
    op = rng.choice(list(_OPERATIONS))
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    if op == "minus" and a < b:
        a, b = b, a
    answer = str(_OPERATIONS[op](a, b))
    if rng.random() >= _WORD_SHARE:
        return {"prompt": rng.choice(_SUM_QUESTIONS).format(a=a, op=op, b=b), "answer": answer}
    template, name, noun = rng.choice(_WORD_PROBLEMS[op]), rng.choice(_NAMES), rng.choice(_OBJECTS)
    prompt = template.format(name=name, a=_count(a, noun), b=_count(b, noun), n=a, m=b, what=noun[1],
                             bags="bag" if a == 1 else "bags", piles="pile" if a == 1 else "piles")
    return {"prompt": prompt, "answer": answer}


def generate_math_problems(n: int, seed: int = 0) -> list[dict[str, str]]:
    """n rows {"prompt", "answer"}; the same seed gives the same rows, and the first k of n are the rows for k."""
    rng = random.Random(seed)
    return [_problem(rng) for _ in range(n)]


def sft_row(row: dict[str, str]) -> dict[str, str]:
    """A problem as step 1 reads it: the prompt, and its answer in one of the demo's step-1 answer styles, whose last
    number is what math_answer checks."""
    return {"prompt": row["prompt"], "chosen": f"The answer is {row['answer']}."}


def train_and_held_out(n_train: int, n_held_out: int, seed: int = 0) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """n_train problems, then up to n_held_out distinct problems that no train problem repeats, drawn from the rows
    that follow, up to twenty times as many as needed: fewer only when the training set covers nearly every
    problem."""
    rows = generate_math_problems(n_train + 20 * n_held_out, seed)
    seen = {row["prompt"] for row in rows[:n_train]}
    held_out = []
    for row in rows[n_train:]:
        if row["prompt"] not in seen:
            seen.add(row["prompt"])
            held_out.append(row)
            if len(held_out) == n_held_out:
                break
    return rows[:n_train], held_out


def math_splits(n: int, seed: int = 0) -> dict[str, list[dict[str, str]]]:
    """n train problems and a held-out tenth (at least one) of distinct problems that no train problem repeats."""
    train, test = train_and_held_out(n, max(1, n // 10), seed)
    return {"train": train, "test": test}
