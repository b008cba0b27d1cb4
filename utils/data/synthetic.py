"""Built-in, seeded preference pairs: a correct, polite answer against one answer that is clearly worse.

This is the default data source (`--data_path synthetic`) for demos and tests, so the difference between chosen
and rejected must be learnable by a tiny reward model trained from scratch, and also one a person would agree with.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import NamedTuple

CATEGORIES: tuple[str, ...] = ("wrong_fact", "wrong_arithmetic", "non_answer", "repetition", "off_topic", "rude")


@dataclass(frozen=True)
class _Topic:
    """One kind of question: phrasings with {k} for the subject and {v} for the answer, and the known facts.

    Each fact maps a subject to its right value and to one fixed, typical mistake (a big city that is not the
    capital, the day before instead of the day after, ...), which a tiny model can learn to reject.
    """

    questions: tuple[str, ...]
    answers: tuple[str, ...]
    facts: dict[str, tuple[str, str]]


class _Question(NamedTuple):
    """A prompt, its correct answer in every phrasing, the same phrasings with a wrong value, and the right value."""

    prompt: str
    rights: list[str]
    wrongs: list[str]
    value: str


_CAPITALS = _Topic(
    ("What is the capital of {k}?", "Which city is the capital of {k}?", "Do you know the capital of {k}?"),
    ("The capital of {k} is {v}.", "{v} is the capital of {k}.", "It is {v}."),
    {"France": ("Paris", "Marseille"), "Germany": ("Berlin", "Munich"), "Italy": ("Rome", "Milan"),
     "Spain": ("Madrid", "Barcelona"), "Portugal": ("Lisbon", "Porto"), "Japan": ("Tokyo", "Osaka"),
     "China": ("Beijing", "Shanghai"), "Russia": ("Moscow", "Saint Petersburg"), "Egypt": ("Cairo", "Alexandria"),
     "Norway": ("Oslo", "Bergen"), "Sweden": ("Stockholm", "Gothenburg"), "Denmark": ("Copenhagen", "Aarhus"),
     "Poland": ("Warsaw", "Krakow"), "Austria": ("Vienna", "Salzburg"), "Ireland": ("Dublin", "Cork"),
     "Peru": ("Lima", "Cusco"), "Argentina": ("Buenos Aires", "Cordoba"), "Mexico": ("Mexico City", "Cancun"),
     "Kenya": ("Nairobi", "Mombasa"), "Thailand": ("Bangkok", "Phuket"), "Belgium": ("Brussels", "Antwerp"),
     "South Korea": ("Seoul", "Busan"), "Canada": ("Ottawa", "Toronto"), "Australia": ("Canberra", "Sydney"),
     "the United Kingdom": ("London", "Manchester"), "Turkey": ("Ankara", "Istanbul"),
     "Brazil": ("Brasilia", "Rio de Janeiro"), "the United States": ("Washington", "New York"),
     "India": ("New Delhi", "Mumbai"), "Switzerland": ("Bern", "Zurich")})
_COLORS = _Topic(
    ("What color is {k}?", "What is the color of {k}?", "Can you tell me what color {k} is?"),
    ("{k} is {v}.", "The color of {k} is {v}.", "It is {v}."),
    {"the sky on a clear day": ("blue", "purple"), "fresh grass": ("green", "pink"), "snow": ("white", "purple"),
     "a ripe banana": ("yellow", "pink"), "coal": ("black", "pink"), "a ripe tomato": ("red", "purple"),
     "a carrot": ("orange", "pink"), "milk": ("white", "purple"), "a lemon": ("yellow", "purple"),
     "an elephant": ("grey", "pink"), "a strawberry": ("red", "purple"), "chocolate": ("brown", "pink")})
_LEGS = _Topic(
    ("How many legs does {k} have?", "Do you know how many legs {k} has?", "Tell me how many legs {k} has."),
    ("{k} has {v} legs.", "It has {v} legs.", "The answer is {v} legs."),
    {"a spider": ("eight", "ten"), "a dog": ("four", "three"), "a bird": ("two", "three"), "an ant": ("six", "five"),
     "a cat": ("four", "five"), "a horse": ("four", "three"), "a chicken": ("two", "three"),
     "a bee": ("six", "five"), "a cow": ("four", "five"), "a duck": ("two", "three"), "a beetle": ("six", "ten"),
     "a scorpion": ("eight", "ten")})
_OPPOSITES = _Topic(
    ("What is the opposite of {k}?", "What word means the opposite of {k}?", "Which word is the opposite of {k}?"),
    ("The opposite of {k} is {v}.", "{v} is the opposite of {k}.", "It is {v}."),
    {"hot": ("cold", "warm"), "big": ("small", "large"), "up": ("down", "high"), "fast": ("slow", "quick"),
     "happy": ("sad", "glad"), "open": ("closed", "wide"), "wet": ("dry", "damp"), "early": ("late", "soon"),
     "tall": ("short", "high"), "full": ("empty", "whole"), "loud": ("quiet", "noisy"), "win": ("lose", "succeed")})
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_CALENDAR = _Topic(
    ("What comes after {k}?", "What comes right after {k}?", "What follows {k}?"),
    ("{v} comes after {k}.", "After {k} comes {v}.", "It is {v}."),
    {name: (names[(i + 1) % len(names)], names[i - 1]) for names in (_DAYS, _MONTHS) for i, name in enumerate(names)})
_FACT_TOPICS = (_CAPITALS, _COLORS, _LEGS, _OPPOSITES, _CALENDAR)
# The share of wrong facts and wrong results that are near misses (another capital, a result off by a little):
# realistic but too hard for a tiny model; the rest are mistakes it can learn to spot.
_NEAR_MISS = 0.25

# Arithmetic keeps "{a} {op} {b}" in every question so that the operands can be read back from the prompt.
_OPERATIONS = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}
_SUM_QUESTIONS = ("What is {a} {op} {b}?", "How much is {a} {op} {b}?", "Can you work out {a} {op} {b}?")
_SUM_ANSWERS = ("{a} {op} {b} is {v}.", "The answer is {v}.", "{a} {op} {b} equals {v}.", "That makes {v}.")

_NON_ANSWERS = ("I'm not sure.", "I don't know, sorry.", "Hard to say.", "I have no idea.", "Who knows?",
                "I can't really say.", "Maybe, maybe not.", "That is difficult to answer.")
_RUDE = ("Figure it out yourself.", "What a stupid question.", "Ask someone who cares.", "Don't waste my time.",
         "Why would I tell you that?", "Look it up yourself, I'm busy.", "Not my problem.",
         "That is a silly question and I won't answer it.")
# Polite openings, shared by a chosen answer and its wrong counterpart, vary the texts so that few rows repeat.
_OPENERS = ("", "Sure. ", "Of course. ", "Good question. ", "Happy to help. ")
_FILLERS = ("I think", "let me see", "the answer is", "well", "um")


def _sentence(text: str) -> str:
    """Subjects such as "snow" or "the sky" open some answers, and a sentence starts with a capital."""
    return text[0].upper() + text[1:]


def _fact_question(rng: random.Random, topic: _Topic) -> _Question:
    """A question on one fact; its wrong value is the fact's common mistake or a near miss of the same kind."""
    key = rng.choice(list(topic.facts))
    right, wrong = topic.facts[key]
    if rng.random() < _NEAR_MISS:
        wrong = rng.choice(sorted({r for r, _ in topic.facts.values()} - {right}))
    prompt = rng.choice(topic.questions).format(k=key)
    return _Question(prompt, [_sentence(a.format(k=key, v=right)) for a in topic.answers],
                     [_sentence(a.format(k=key, v=wrong)) for a in topic.answers], right)


def _wrong_number(rng: random.Random, right: int) -> int:
    """A near miss, or a three-digit number that single-digit operands never give, which a tiny model can spot."""
    if rng.random() < _NEAR_MISS:
        return rng.choice([w for w in range(right - 3, right + 4) if w >= 0 and w != right])
    return rng.randint(100, 999)


def _arithmetic_question(rng: random.Random) -> _Question:
    """Like _fact_question, for single-digit operands; minus keeps a >= b so that no answer is negative."""
    op = rng.choice(list(_OPERATIONS))
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    if op == "minus" and a < b:
        a, b = b, a
    right = _OPERATIONS[op](a, b)
    wrong = _wrong_number(rng, right)
    prompt = rng.choice(_SUM_QUESTIONS).format(a=a, op=op, b=b)
    return _Question(prompt, [t.format(a=a, op=op, b=b, v=right) for t in _SUM_ANSWERS],
                     [t.format(a=a, op=op, b=b, v=wrong) for t in _SUM_ANSWERS], str(right))


def _question(rng: random.Random, topic: _Topic | None) -> _Question:
    """topic None stands for arithmetic."""
    return _arithmetic_question(rng) if topic is None else _fact_question(rng, topic)


def _row(rng: random.Random, category: str) -> dict[str, str]:
    """One pair whose rejected answer has the flaw named by `category`."""
    topics: list[_Topic | None] = [*_FACT_TOPICS, None]
    if category == "wrong_fact":
        topic = rng.choice(_FACT_TOPICS)
    elif category == "wrong_arithmetic":
        topic = None
    else:
        topic = rng.choice(topics)
    question = _question(rng, topic)
    phrasing, opener = rng.randrange(len(question.rights)), rng.choice(_OPENERS)
    chosen = opener + question.rights[phrasing]
    if category in ("wrong_fact", "wrong_arithmetic"):
        rejected = opener + question.wrongs[phrasing]
    elif category == "non_answer":
        rejected = rng.choice(_NON_ANSWERS)
    elif category == "rude":
        rejected = rng.choice(_RUDE)
    elif category == "repetition":
        phrase = rng.choice((*_FILLERS, question.value))
        rejected = _sentence(" ".join([phrase] * rng.randint(4, 8)) + ".")
    else:  # off_topic: the first phrasing names its own subject, so the answer is clearly about something else
        rejected = _question(rng, rng.choice([t for t in topics if t is not topic])).rights[0]
    return {"prompt": question.prompt, "chosen": chosen, "rejected": rejected, "category": category}


def generate_pairs(n: int, seed: int = 0) -> list[dict[str, str]]:
    """n rows, each {"prompt", "chosen", "rejected", "category"}; same seed -> identical rows.

    Categories come in shuffled blocks of one each, so that every category has about n / 6 rows.
    """
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    while len(rows) < n:
        block = list(CATEGORIES)
        rng.shuffle(block)
        rows.extend(_row(rng, category) for category in block[:n - len(rows)])
    return rows
