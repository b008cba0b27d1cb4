"""What the harness counts in any trainer's batches, ours or TRL's: computed and pad positions, and the pairs in the
order they came, each named by its token ids."""
from __future__ import annotations

import hashlib
import json
from typing import Callable

import torch


def pair_key(chosen: list[int], rejected: list[int]) -> str:
    """A short name for a pair's token ids: the harness finds a trainer's batch order, and checks its ids, by it."""
    return hashlib.sha1(json.dumps([chosen, rejected]).encode()).hexdigest()[:16]


class PadCounter:
    """Wraps a collate function to count the positions computed and those that are pad, whatever the layout, and to
    note the pairs it collates, in order, by pair_key."""

    def __init__(self, collate: Callable, pad_id: int) -> None:
        self.collate, self.pad_id = collate, pad_id
        self.tokens = self.positions = self.batches = 0
        self.order: list[str] = []

    def __call__(self, examples: list) -> dict[str, torch.Tensor]:
        batch = self.collate(examples)
        ids = batch["input_ids"]
        self.tokens += int((ids != self.pad_id).sum())
        self.positions += ids.numel()
        self.batches += 1
        self.order += [pair_key(e["chosen"], e["rejected"]) for e in examples if "chosen" in e]
        return batch

    def counts(self) -> dict[str, int]:
        return {"tokens": self.tokens, "positions": self.positions, "batches": self.batches}
