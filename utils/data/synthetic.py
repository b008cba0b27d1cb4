"""Built-in, seeded preference pairs: a correct, polite answer against one answer that is clearly worse.

This is the default data source (`--data_path synthetic`) for demos and tests, so the difference between chosen
and rejected must be learnable by a tiny reward model trained from scratch, and also one a person would agree with.
The same questions give step 1 rows of which a share answer rudely, evasively or in loops (`generate_sft_rows`), and
a rule-based judge names those flaws (`flaw`), so that the step-3 demo starts from a flawed policy and can measure it.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import NamedTuple

CATEGORIES: tuple[str, ...] = ("wrong_fact", "wrong_arithmetic", "non_answer", "repetition", "off_topic", "rude")
# The flaws that need no knowledge of the question to see, so a rule-based judge (`flaw`) can name them exactly.
GENERIC_FLAWS: tuple[str, ...] = ("rude", "non_answer", "repetition")


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
    elif category in GENERIC_FLAWS:
        rejected = _generic_flaw(rng, category, question.value)
    else:  # off_topic: the first phrasing names its own subject, so the answer is clearly about something else
        rejected = _question(rng, rng.choice([t for t in topics if t is not topic])).rights[0]
    return {"prompt": question.prompt, "chosen": chosen, "rejected": rejected, "category": category}


def _generic_flaw(rng: random.Random, category: str, value: str) -> str:
    """A reply flawed whatever the question: a non-answer, rudeness, or a loop of a filler or of the right value."""
    if category == "non_answer":
        return rng.choice(_NON_ANSWERS)
    if category == "rude":
        return rng.choice(_RUDE)
    phrase = rng.choice((*_FILLERS, value))
    return _sentence(" ".join([phrase] * rng.randint(4, 8)) + ".")


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


def generate_sft_rows(n: int, seed: int = 0, flawed_share: float = 0.25) -> list[dict[str, str]]:
    """n rows {"prompt", "chosen", "category"} for step 1, of which a seeded `flawed_share` answer with a flaw.

    A policy fine-tuned on them sometimes answers rudely, evasively or in loops, as the step-3 demo needs: flaws
    that a reward model trained on `generate_pairs` recognises, and that `flaw` counts. Each row comes from a pair
    with one of GENERIC_FLAWS (equally likely); a flawed row keeps the pair's rejected answer as its "chosen" and
    names the flaw as its category, a good row keeps the right answer and the category "good". As with
    generate_pairs, the same seed gives identical rows, and the first k of n rows are the rows for n = k.
    """
    if not 0 <= flawed_share <= 1:
        raise ValueError(f"flawed_share must be between 0 and 1, got {flawed_share}")
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    for _ in range(n):
        flawed = rng.random() < flawed_share
        pair = _row(rng, rng.choice(GENERIC_FLAWS))
        rows.append({"prompt": pair["prompt"], "chosen": pair["rejected"] if flawed else pair["chosen"],
                     "category": pair["category"] if flawed else "good"})
    return rows


def _words(text: str) -> list[str]:
    """Lowercase words and numbers without punctuation; contractions are joined even when a tokenizer's decoding
    spaced them ("don ' t", "I’m"), so that phrases match however a tiny model wrote them."""
    text = re.sub(r"\s*['\u2019]\s*(t|m|s|re|ve|ll|d)\b", r"\1", text.lower())
    return re.findall(r"[a-z0-9]+", text)


_RUDE_WORDS = [_words(phrase) for phrase in _RUDE]
_NON_ANSWER_WORDS = [_words(phrase) for phrase in _NON_ANSWERS]
_FILLER_WORDS = [_words(phrase) for phrase in _FILLERS]
_MAX_REPEATED_PHRASE = 4  # words; the longest filler or right value ("Rio de Janeiro") has three


def _contains(words: list[str], phrases: list[list[str]]) -> bool:
    """Whether any phrase occurs in `words` as whole words: text the model runs on with does not hide it."""
    text = f" {' '.join(words)} "
    return any(f" {' '.join(phrase)} " in text for phrase in phrases)


def _repeats(words: list[str]) -> bool:
    """A word or a phrase of up to _MAX_REPEATED_PHRASE words three or more times in a row, anywhere."""
    return any(words[i:i + size] * 3 == words[i:i + 3 * size]
               for size in range(1, _MAX_REPEATED_PHRASE + 1) for i in range(len(words) - 3 * size + 1))


def _filler_run(words: list[str]) -> bool:
    """The whole answer is one filler said at least twice, perhaps cut off inside a last repeat ("um um u")."""
    text = " ".join(words)
    units = [" ".join(filler) + " " for filler in _FILLER_WORDS]
    return any(len(text) >= 2 * len(unit) - 1 and (unit * (len(text) // len(unit) + 1)).startswith(text)
               for unit in units)


def flaw(prompt: str, answer: str) -> str | None:
    """The flaw of an answer to a synthetic question: "empty", "rude", "non_answer", "repetition", or None.

    A rule-based judge, so that the step-3 demo measures how often a policy answers badly without trusting the
    reward model it optimises. It sees only flaws that show in the answer, whatever the question, and not whether a
    fact or a result is right; `prompt` is taken so that it is called as a reward function is. Case, punctuation,
    extra whitespace and text run on after the flaw do not hide one.
    """
    words = _words(answer)
    if not words:
        return "empty"
    if _contains(words, _RUDE_WORDS):
        return "rude"
    if _contains(words, _NON_ANSWER_WORDS):
        return "non_answer"
    if _repeats(words) or _filler_run(words):
        return "repetition"
    return None


def flawed_share(prompts: list[str], answers: list[str]) -> float:
    """The share of answers that `flaw` names a flaw of: the step-3 demo's measure of a policy, to fall with RLHF."""
    if len(prompts) != len(answers) or not answers:
        raise ValueError(f"expected as many prompts as answers, at least one, got {len(prompts)} and {len(answers)}")
    return sum(flaw(p, a) is not None for p, a in zip(prompts, answers)) / len(answers)
