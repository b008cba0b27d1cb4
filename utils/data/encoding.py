"""Rows to token ids (pairs for step 2 and DPO, texts and labels for step 1), and batches padded only to their longest
row."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from utils.data.formatting import format_prompt, format_text
from utils.data.sources import Row

IGNORE = -100  # the label of tokens that do not count in the language-modelling loss
# Part of every tokenized-data cache key: bump it with any change here that changes the ids or labels produced, so
# that cached entries written by the old code are rebuilt rather than reused.
ENCODING_VERSION = 1


@dataclass
class EncodeReport:
    unit: str = "pairs"
    kept: int = 0
    truncated: int = 0
    dropped: int = 0
    tokens: dict[str, float] = field(default_factory=dict)  # length percentiles of every text, before any cut
    longer_wins: float | None = None  # pairs: the share whose chosen text is longer (the length-bias baseline)

    def lines(self, split: str) -> list[str]:
        return [f"{split}: {self.truncated} {self.unit} had their prompt cut from the left to fit --max_seq_len, "
                f"{self.dropped} {self.unit} did not fit and were skipped"] if self.truncated or self.dropped else []

    def summarize(self, examples: list[dict[str, list[int]]], lengths: list[int]) -> None:
        """Count what was kept, the texts' lengths (to choose --max_seq_len by) and, for pairs, how often "the longer
        answer wins" is right."""
        self.kept = len(examples)
        lengths = sorted(lengths)
        if lengths:
            at = {name: lengths[min(len(lengths) - 1, int(q * len(lengths)))]
                  for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}
            self.tokens = at | {"max": lengths[-1], "mean": round(sum(lengths) / len(lengths), 1)}
        if examples and "rejected" in examples[0]:  # ties count as wrong, as in reward accuracy
            self.longer_wins = sum(len(ex["chosen"]) > len(ex["rejected"]) for ex in examples) / len(examples)


def _encode(tokenizer: PreTrainedTokenizerBase, prompt_text: str, text: str) -> tuple[list[int], int, int]:
    """Ids of `text`, the end of its prompt tokens, and how many special tokens lead it (kept on truncation:
    a BOS, whether the tokenizer adds it or a chat template writes it)."""
    enc = tokenizer(text, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    special = set(tokenizer.all_special_ids)
    lead = 0
    while lead < len(ids) and ids[lead] in special:
        lead += 1
    prompt_end = next(i for i in range(lead, len(ids)) if offsets[i][1] > len(prompt_text))
    return ids, prompt_end, lead


def _fit(seqs: list[list[int]], prompt_end: int, lead: int, max_seq_len: int, overlength: str,
         report: EncodeReport) -> list[list[int]] | None:
    """Sequences that share a prompt, cut to --max_seq_len by removing the same prompt tokens from each, just after
    the leading special tokens so that answers and EOS stay whole; None (counted) when that cannot or may not be
    done."""
    excess = max(len(s) for s in seqs) - max_seq_len
    if excess <= 0:
        return seqs
    if overlength == "drop" or excess > prompt_end - lead:
        report.dropped += 1
        return None
    report.truncated += 1
    return [s[:lead] + s[lead + excess:] for s in seqs]


def encode_pairs(rows: list[Row], tokenizer: PreTrainedTokenizerBase, template: str, max_seq_len: int,
                 overlength: str) -> tuple[list[dict[str, list[int]]], EncodeReport]:
    """Token ids of each pair's chosen and rejected texts, each ending in the EOS id (the tokenizer appends it)."""
    report = EncodeReport("pairs")
    out, lengths = [], []
    for row in rows:
        prompt_text = format_prompt(row["prompt"], template, tokenizer)
        chosen, c_end, lead = _encode(tokenizer, prompt_text, format_text(row["prompt"], row["chosen"], template,
                                                                          tokenizer))
        rejected, r_end, _ = _encode(tokenizer, prompt_text, format_text(row["prompt"], row["rejected"], template,
                                                                         tokenizer))
        lengths += [len(chosen), len(rejected)]
        fitted = _fit([chosen, rejected], min(c_end, r_end), lead, max_seq_len, overlength, report)
        if fitted is not None:
            out.append(dict(zip(("chosen", "rejected"), fitted)))
    report.summarize(out, lengths)
    return out, report


def encode_answer_sets(rows: list[Row], tokenizer: PreTrainedTokenizerBase, template: str, max_seq_len: int,
                       overlength: str) -> tuple[list[list[list[int]] | None], list[bool]]:
    """Token ids of each row's answers, its chosen first, then its rejected (each one answer or a list of them),
    cut to max_seq_len as step 2 cuts a pair: the same prompt tokens go from every answer's text. None for a row that
    cannot or may not be cut (--overlength drop); and whether each row was cut."""
    report = EncodeReport("items")
    out, cut = [], []
    for row in rows:
        prompt_text = format_prompt(row["prompt"], template, tokenizer)
        answers = [a for name in ("chosen", "rejected") for a in (row[name] if isinstance(row[name], list)
                                                                  else [row[name]])]
        encoded = [_encode(tokenizer, prompt_text, format_text(row["prompt"], a, template, tokenizer)) for a in answers]
        seqs = [ids for ids, _, _ in encoded]
        fitted = _fit(seqs, min(end for _, end, _ in encoded), encoded[0][2], max_seq_len, overlength, report)
        out.append(fitted)
        cut.append(fitted is not None and len(fitted[0]) < len(seqs[0]))
    return out, cut


def _with_eos(ids: list[int], prompt_end: int, eos_id: int) -> list[int]:
    """A causal LM's text ends with the EOS id, which it learns to write; a chat template may have written it."""
    return ids if eos_id in ids[prompt_end:] else ids + [eos_id]


def encode_preferences(rows: list[Row], tokenizer: PreTrainedTokenizerBase, template: str, max_seq_len: int,
                       overlength: str) -> tuple[list[dict[str, list[int]]], EncodeReport]:
    """DPO's pairs: the policy's chosen and rejected texts, each ending in the EOS id, and where each answer starts
    (`starts`: chosen's, rejected's), since only the answer's tokens count in its log-probability."""
    report = EncodeReport("pairs")
    out, lengths = [], []
    for row in rows:
        prompt_text = format_prompt(row["prompt"], template, tokenizer)
        texts, starts, lead = [], [], 0
        for field_name in ("chosen", "rejected"):
            ids, prompt_end, lead = _encode(tokenizer, prompt_text, format_text(row["prompt"], row[field_name],
                                                                                template, tokenizer))
            texts.append(_with_eos(ids, prompt_end, tokenizer.eos_token_id))
            starts.append(prompt_end)
        lengths += [len(ids) for ids in texts]
        fitted = _fit(texts, min(starts), lead, max_seq_len, overlength, report)
        if fitted is not None:
            cut = len(texts[0]) - len(fitted[0])
            out.append({"chosen": fitted[0], "rejected": fitted[1], "starts": [s - cut for s in starts]})
    report.summarize(out, lengths)
    return out, report


def encode_sft(rows: list[Row], tokenizer: PreTrainedTokenizerBase, template: str, max_seq_len: int | None,
               overlength: str, train_on_prompt: bool) -> tuple[list[dict[str, list[int]]], EncodeReport]:
    """Input ids of prompt + chosen answer + EOS id, and labels that hide the prompt unless `train_on_prompt`.

    max_seq_len None keeps every text whole (packing cuts them into blocks later).
    """
    report = EncodeReport("texts")
    out, lengths = [], []
    for row in rows:
        prompt_text = format_prompt(row["prompt"], template, tokenizer)
        ids, prompt_end, lead = _encode(tokenizer, prompt_text, format_text(row["prompt"], row["chosen"], template,
                                                                            tokenizer))
        ids = _with_eos(ids, prompt_end, tokenizer.eos_token_id)
        lengths.append(len(ids))
        labels = list(ids) if train_on_prompt else [IGNORE] * prompt_end + ids[prompt_end:]
        fitted = [ids, labels] if max_seq_len is None else _fit([ids, labels], prompt_end, lead, max_seq_len,
                                                                overlength, report)
        if fitted is not None:
            out.append(dict(zip(("input_ids", "labels"), fitted)))
    report.summarize(out, lengths)
    return out, report


def pack_blocks(examples: list[dict[str, list[int]]], block_size: int) -> list[dict[str, list[int]]]:
    """Concatenate the texts and cut them into block_size pieces (LMFlow's grouping); each token keeps its own
    label, so masked prompts stay masked. The last, shorter block is kept: no text is lost."""
    ids = [t for ex in examples for t in ex["input_ids"]]
    labels = [t for ex in examples for t in ex["labels"]]
    return [{"input_ids": ids[i:i + block_size], "labels": labels[i:i + block_size]}
            for i in range(0, len(ids), block_size)]


def pack_segments(examples: list[dict[str, list[int]]], block_size: int) -> list[dict[str, list[int]]]:
    """Whole texts, in order, into rows of up to block_size tokens, each row listing its texts' lengths; a text's
    first label is dropped, as nothing before it in its own sequence predicts it. With collate_segments the losses
    are those of the texts one by one."""
    rows: list[dict[str, list[int]]] = []
    for ex in examples:
        if not rows or sum(rows[-1]["segments"]) + len(ex["input_ids"]) > block_size:
            rows.append({"input_ids": [], "labels": [], "segments": []})
        rows[-1]["input_ids"] += ex["input_ids"]
        rows[-1]["labels"] += [IGNORE] + ex["labels"][1:]
        rows[-1]["segments"].append(len(ex["input_ids"]))
    return rows


def collate_segments(rows: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Packed rows, right-padded to the longest, with a (rows, 1, width, width) boolean mask that keeps attention
    causal within each text, and positions that restart at each text."""
    batch = collate_sft(rows, pad_id)
    width = batch["input_ids"].size(1)
    mask = torch.eye(width, dtype=torch.bool).repeat(len(rows), 1, 1, 1)  # a pad sees itself: no empty softmax row
    positions = torch.zeros_like(batch["input_ids"])
    for row, packed in enumerate(rows):
        start = 0
        for length in packed["segments"]:
            mask[row, 0, start:start + length, start:start + length] = torch.ones(length, length).tril().bool()
            positions[row, start:start + length] = torch.arange(length)
            start += length
    return batch | {"attention_mask": mask, "position_ids": positions}


def _right_pad(seqs: list[list[int]], value: int, width: int | None = None) -> torch.Tensor:
    out = torch.full((len(seqs), width or max(len(s) for s in seqs)), value, dtype=torch.long)
    for i, seq in enumerate(seqs):
        out[i, :len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


def collate_pairs(pairs: list[dict[str, list[int]]], pad_id: int, width: int | None = None) -> dict[str, torch.Tensor]:
    """Chosen rows then rejected rows, right-padded to the longest of them (or to `width`, as DeepSpeed-Chat pads
    to --max_seq_len): one forward pass for both."""
    seqs = [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]
    return {"input_ids": _right_pad(seqs, pad_id, width), "attention_mask": _right_pad([[1] * len(s) for s in seqs],
                                                                                       0, width),
            "num_tokens": torch.tensor(sum(map(len, seqs)))}


def collate_sft(examples: list[dict[str, list[int]]], pad_id: int, width: int | None = None
                ) -> dict[str, torch.Tensor]:
    """Right-padded to the longest text of the batch (or to `width`); padding is masked from attention and from
    the labels."""
    seqs = [ex["input_ids"] for ex in examples]
    return {"input_ids": _right_pad(seqs, pad_id, width), "attention_mask": _right_pad([[1] * len(s) for s in seqs],
                                                                                       0, width),
            "labels": _right_pad([ex["labels"] for ex in examples], IGNORE, width),
            "num_tokens": torch.tensor(sum(map(len, seqs)))}
