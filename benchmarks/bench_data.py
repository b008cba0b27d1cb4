"""Benchmark pairs, the tokenizer trained on them, and the token counts every trainer is judged by.

Every trainer gets the same pairs as the same formatted texts, so the figures differ only by how each trains.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from utils.data.formatting import format_text
from utils.data.sources import FIELDS, Row, RowChecker, read_source
from utils.models.loading import load_tokenizer
from utils.models.shared_prompt import pair_row_length, shared_length
from utils.models.tiny import FAMILIES, train_bpe

TEMPLATE = "dschat"  # the trainer's default; TRL and the baseline get texts formatted by the same function

# Synthetic turns draw from common English words, then made-up words of 2-4 syllables, with Zipf weights, so that
# word frequencies, and the vocabulary a tokenizer learns from them, look like real text's.
WORDS = """the of and to a in is you that it for i on with as are this be was have or can your not but at by from
what they he all we if an do there one so about more will which would when my some just how their has like out
them time other people could these no than any only into its also then make know good use think well need want
help way first even new work because water most very find day back should thing food many over much try best
sure may might get place before kind long little right look different take call where start home money really
give keep year after while each every great small large idea often since both few enough dog car house child
friend question answer recipe garden plant music book school health sleep exercise travel city weather""".split()
SYLLABLES = "ba be bi bo ka ke ki ko la le li lo ma me mi mo na ne ni no ra re ri ro sa se si so ta te ti to".split()
LEXICON_SIZE = 6000


@dataclass
class Pairs:
    """The rows read, and how many were skipped and why (nothing is dropped silently)."""
    rows: list[Row]
    source: str  # the data file's name, or "synthetic"
    skipped_bad: int = 0  # prompts that differ between chosen and rejected, empty answers, unreadable lines
    skipped_identical: int = 0  # chosen answer equal to the rejected one: not a preference


def _lexicon(rng: random.Random) -> tuple[list[str], list[float]]:
    made_up = {"".join(rng.choices(SYLLABLES, k=rng.randint(2, 4))) for _ in range(LEXICON_SIZE)}
    words = WORDS + sorted(made_up - set(WORDS))
    return words, [1 / (rank + 1) for rank in range(len(words))]


def _sentence(rng: random.Random, lexicon: tuple[list[str], list[float]], words: int) -> str:
    return " ".join(rng.choices(lexicon[0], weights=lexicon[1], k=max(1, words))).capitalize() + rng.choice(".?.!.")


def _lognormal_words(rng: random.Random, median: float, sigma: float, cap: int = 600) -> int:
    return min(cap, max(1, round(rng.lognormvariate(math.log(median), sigma))))


def synthetic_pairs(n: int, seed: int) -> list[Row]:
    """Seeded multi-turn transcripts with long-tailed (lognormal) turn counts and lengths, as in HH-RLHF: most
    pairs are short, a few are long enough to dominate a batch padded to its longest row."""
    rng = random.Random(seed)
    lexicon = _lexicon(rng)
    rows = []
    for _ in range(n):
        turns = 1 + min(5, int(rng.lognormvariate(-0.3, 0.9)))
        prompt = ""
        for turn in range(turns):
            prompt += "\n\nHuman: " + _sentence(rng, lexicon, _lognormal_words(rng, 14, 0.7))
            if turn < turns - 1:
                prompt += "\n\nAssistant: " + _sentence(rng, lexicon, _lognormal_words(rng, 35, 0.8))
        prompt += "\n\nAssistant:"
        chosen, rejected = (" " + _sentence(rng, lexicon, _lognormal_words(rng, 30, 0.9)) for _ in range(2))
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


def load_pairs(data_file: Path, synthetic_size: int, seed: int) -> Pairs:
    """HH-RLHF transcripts split at the last Assistant turn by the repo's own reader (bad rows skipped and counted),
    or seeded synthetic pairs when `data_file` is the word `synthetic`."""
    if str(data_file) == "synthetic":
        rows, source, bad = synthetic_pairs(synthetic_size, seed), "synthetic", 0
    elif data_file.is_file():
        checker = RowChecker(on_bad_row="skip")
        splits, _ = read_source(str(data_file), FIELDS, checker)
        rows, source, bad = splits["train"], data_file.name, checker.skipped
    else:
        raise SystemExit(f"--data_file {data_file}: no such file (or pass --data_file synthetic)")
    kept = [r for r in rows if r["chosen"] != r["rejected"]]  # our trainer skips these too
    return Pairs(kept, source, bad, len(rows) - len(kept))


def texts(row: Row) -> tuple[str, str]:
    """Chosen and rejected texts exactly as our trainer formats them (--template dschat)."""
    return format_text(row["prompt"], row["chosen"], TEMPLATE), format_text(row["prompt"], row["rejected"], TEMPLATE)


def train_tokenizer(corpus: list[str], out_dir: Path, vocab_size: int) -> int:
    """A byte-level BPE trained on the benchmark texts, with OPT's special tokens (`</s>` as BOS and EOS, `<pad>`)
    and OPT's rule of a leading BOS; saved as a fast tokenizer directory. Returns the vocabulary realized, which
    a small corpus keeps below `vocab_size`. No EOS is appended here: each trainer adds it its own way."""
    spec = FAMILIES["opt"]
    tokenizer = train_bpe(corpus, spec["specials"], spec["bos"], spec["eos"], spec["pad"], vocab_size)
    tokenizer.save_pretrained(out_dir)
    return len(tokenizer)


def trainer_tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    """The tokenizer as our trainer loads it (EOS id appended to every text), for the shared token counts."""
    return load_tokenizer(str(model_dir), "end", append_eos=True)


@dataclass
class EncodedPair:
    row: Row
    chosen: list[int]
    rejected: list[int]

    @property
    def useful(self) -> int:
        """Tokens a pair needs: the shared prefix once, then each answer's own tokens."""
        return pair_row_length({"chosen": self.chosen, "rejected": self.rejected})


def encode(rows: list[Row], tokenizer: PreTrainedTokenizerBase) -> list[EncodedPair]:
    out = []
    for row in rows:
        chosen, rejected = texts(row)
        out.append(EncodedPair(row, tokenizer(chosen)["input_ids"], tokenizer(rejected)["input_ids"]))
    return out


def select(pairs: list[EncodedPair], n_train: int, n_eval: int, max_seq_len: int, seed: int
           ) -> tuple[list[EncodedPair], list[EncodedPair], int]:
    """A seeded sample of pairs that fit max_seq_len whole, split into train and eval, and how many did not fit.

    TRL drops over-length pairs while our trainer cuts their prompt, so only pairs that no trainer changes are
    used: every trainer then sees exactly the same tokens."""
    fitting = [p for p in pairs if max(len(p.chosen), len(p.rejected)) <= max_seq_len]
    if len(fitting) < n_train + n_eval:
        raise SystemExit(f"error: only {len(fitting)} pairs fit --max_seq_len {max_seq_len}; "
                         f"{n_train + n_eval} are needed: lower --steps or --batch_pairs")
    random.Random(seed).shuffle(fitting)
    return fitting[:n_train], fitting[n_train:n_train + n_eval], len(pairs) - len(fitting)


def percentiles(values: list[int]) -> dict[str, float]:
    ordered = sorted(values)
    at = {f"p{q}": ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] for q in (50, 90, 99)}
    return at | {"max": ordered[-1], "mean": round(sum(ordered) / len(ordered), 1)}


def token_stats(pairs: list[EncodedPair]) -> dict[str, object]:
    """Length percentiles of the texts and of the pairs' useful tokens, and the prompt's share of a pair."""
    lengths = [n for p in pairs for n in (len(p.chosen), len(p.rejected))]
    shared = sum(shared_length(p.chosen, p.rejected) for p in pairs)
    return {"text_tokens": percentiles(lengths), "useful_tokens_per_pair": percentiles([p.useful for p in pairs]),
            "useful_tokens_total": sum(p.useful for p in pairs),
            "shared_prefix_share": round(shared / sum(lengths), 4)}
