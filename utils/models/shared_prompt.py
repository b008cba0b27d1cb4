"""Chosen and rejected in one row that computes their shared prompt once.

A pair becomes `[shared prefix, rest of chosen, rest of rejected]`. The mask lets each part see the prefix and
itself only (causally), and the rejected part's positions continue from the prefix, so every token sees exactly
what it would see in its own sequence: the scores, the loss and the gradients equal the two-sequence computation.
The prefix is the longest common token prefix of the two sequences, so it is exact whatever the tokenizer did at
the prompt/answer border; it always leaves each answer at least its last (scored) token.
"""
from __future__ import annotations

import torch

from utils.models.reward_model import score_positions


def shared_length(chosen: list[int], rejected: list[int]) -> int:
    limit = min(len(chosen), len(rejected)) - 1
    n = 0
    while n < limit and chosen[n] == rejected[n]:
        n += 1
    return n


def pair_row_length(pair: dict[str, list[int]]) -> int:
    """Tokens the pair costs in its shared row: the prefix once, then both rests."""
    return len(pair["chosen"]) + len(pair["rejected"]) - shared_length(pair["chosen"], pair["rejected"])


def collate_shared_prompt(pairs: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """One row per pair, right-padded to the longest row, with a (pairs, 1, width, width) boolean mask (True: may
    attend), position ids, and `score_index`: each row's chosen and rejected scored tokens, (pairs, 2).

    The scored tokens come from the one score rule, `score_positions` with `end`, applied to the tokens of each
    answer's own sequence within the row."""
    shared = [shared_length(p["chosen"], p["rejected"]) for p in pairs]
    used = [len(p["chosen"]) + len(p["rejected"]) - n for p, n in zip(pairs, shared)]
    width = max(used)
    input_ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(pairs), width), dtype=torch.long)
    mask = torch.eye(width, dtype=torch.bool).repeat(len(pairs), 1, 1, 1)  # a pad sees itself: no empty softmax row
    sequences = torch.zeros((len(pairs), 2, width), dtype=torch.long)  # which row tokens make up each answer's sequence
    for row, (pair, n, end) in enumerate(zip(pairs, shared, used)):
        chosen, rejected = pair["chosen"], pair["rejected"]
        input_ids[row, :end] = torch.tensor(chosen + rejected[n:])
        position_ids[row, :end] = torch.cat([torch.arange(len(chosen)), torch.arange(n, len(rejected))])
        mask[row, 0, :end, :end] = torch.ones(end, end, dtype=torch.bool).tril()
        mask[row, 0, len(chosen):end, n:len(chosen)] = False  # the rejected answer never sees the chosen one
        sequences[row, 0, :len(chosen)] = 1
        sequences[row, 1, :n] = 1
        sequences[row, 1, len(chosen):end] = 1
    score_index = score_positions(input_ids.repeat_interleave(2, dim=0), sequences.view(-1, width), "end", pad_id,
                                  num_padding_at_beginning=0).view(len(pairs), 2)
    return {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": mask,
            "score_index": score_index, "num_tokens": torch.tensor(sum(used))}
