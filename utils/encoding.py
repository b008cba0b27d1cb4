"""Preference rows to token ids, and batches padded only as far as their longest sequence."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from utils.data import Row
from utils.formatting import format_prompt, format_text


@dataclass
class EncodeReport:
    truncated: int = 0
    dropped: int = 0

    def lines(self, split: str) -> list[str]:
        return [f"{split}: {self.truncated} pairs had their prompt cut from the left to fit --max_seq_len, "
                f"{self.dropped} pairs did not fit and were skipped"] if self.truncated or self.dropped else []


def _encode(tokenizer: PreTrainedTokenizerBase, prompt_text: str, text: str) -> tuple[list[int], int, int]:
    """Ids of `text`, the end of its prompt tokens, and how many special tokens lead it (kept on truncation)."""
    enc = tokenizer(text, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    special = set(tokenizer.all_special_ids)
    lead = 0
    while lead < len(ids) and ids[lead] in special and offsets[lead] == (0, 0):
        lead += 1
    prompt_end = next(i for i in range(lead, len(ids)) if offsets[i][1] > len(prompt_text))
    return ids, prompt_end, lead


def encode_pairs(rows: list[Row], tokenizer: PreTrainedTokenizerBase, template: str, max_seq_len: int,
                 overlength: str) -> tuple[list[dict[str, list[int]]], EncodeReport]:
    """Token ids of each pair's chosen and rejected texts, each ending in the EOS id.

    Over-long pairs lose the same number of prompt tokens from the left in both texts (after any BOS),
    so the answers and EOS stay whole; pairs that cannot fit that way are skipped and counted.
    """
    report = EncodeReport()
    out = []
    for row in rows:
        prompt_text = format_prompt(row["prompt"], template)
        chosen, c_end, lead = _encode(tokenizer, prompt_text, format_text(row["prompt"], row["chosen"], template))
        rejected, r_end, _ = _encode(tokenizer, prompt_text, format_text(row["prompt"], row["rejected"], template))
        excess = max(len(chosen), len(rejected)) - max_seq_len
        if excess > 0:
            if overlength == "drop" or excess > min(c_end, r_end) - lead:
                report.dropped += 1
                continue
            report.truncated += 1
            chosen = chosen[:lead] + chosen[lead + excess:]
            rejected = rejected[:lead] + rejected[lead + excess:]
        out.append({"chosen": chosen, "rejected": rejected})
    return out, report


def collate_pairs(pairs: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Chosen rows then rejected rows, right-padded to the longest of them: one forward pass for both."""
    seqs = [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, seq in enumerate(seqs):
        input_ids[i, :len(seq)] = torch.tensor(seq)
        attention_mask[i, :len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}
