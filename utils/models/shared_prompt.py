"""Several sequences that start alike in one row that computes their shared prefix once.

Sequences `prefix + rest_i` become the row `[prefix, rest_1, ..., rest_K]`. The mask lets each rest see the prefix
and itself only (causally), and each rest's positions continue from the prefix, so every token sees exactly what it
would see in its own sequence: the logits, the loss and the gradients equal the K-sequence computation. Step 2 puts
a pair's chosen and rejected answers in one row, with the longest common token prefix of the two sequences as the
prefix, so it is exact whatever the tokenizer did at the prompt/answer border, and each answer keeps at least its
last (scored) token. Step 3 puts a prompt's K sampled answers in one row, and rw_eval.py --benchmark an item's
answers.
"""
from __future__ import annotations

import torch
from transformers import PreTrainedModel

from utils import distributed as dist
from utils.models.reward_model import RewardModel, score_positions

SHARED_SCORING = {"opt", "llama"}  # causal reward models whose shared rows are tested against pipeline()


def shared_length(*sequences: list[int]) -> int:
    """The longest common prefix of the sequences that leaves each at least its last token."""
    limit = min(map(len, sequences)) - 1
    n = 0
    while n < limit and all(seq[n] == sequences[0][n] for seq in sequences):
        n += 1
    return n


def pair_row_length(pair: dict[str, list[int]]) -> int:
    """Tokens the pair costs in its shared row: the prefix once, then both rests."""
    return len(pair["chosen"]) + len(pair["rejected"]) - shared_length(pair["chosen"], pair["rejected"])


def shared_rows(rows: list[tuple[list[int], list[list[int]]]], pad_id: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(prefix, rests) rows as `[prefix, rest_1, ..., rest_K]`, right-padded to the longest: input ids and position
    ids (rows, width), and a (rows, 1, width, width) boolean mask (True: may attend)."""
    width = max(len(prefix) + sum(map(len, rests)) for prefix, rests in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.eye(width, dtype=torch.bool).repeat(len(rows), 1, 1, 1)  # a pad sees itself: no empty softmax row
    causal = torch.ones(width, width, dtype=torch.bool).tril()  # built once: its corners are every block's mask
    for row, (prefix, rests) in enumerate(rows):
        n = start = len(prefix)
        input_ids[row, :n] = torch.tensor(prefix, dtype=torch.long)
        position_ids[row, :n] = torch.arange(n)
        mask[row, 0, :n, :n] = causal[:n, :n]
        for rest in rests:
            end = start + len(rest)
            input_ids[row, start:end] = torch.tensor(rest, dtype=torch.long)
            position_ids[row, start:end] = torch.arange(n, n + len(rest))
            mask[row, 0, start:end, :n] = True
            mask[row, 0, start:end, start:end] = causal[:len(rest), :len(rest)]
            start = end
    return input_ids, position_ids, mask


def collate_shared_prompt(pairs: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """One row per pair, right-padded to the longest row, with a (pairs, 1, width, width) boolean mask (True: may
    attend), position ids, and `score_index`: each row's chosen and rejected scored tokens, (pairs, 2).

    The scored tokens come from the one score rule, `score_positions` with `end`, applied to the tokens of each
    answer's own sequence within the row."""
    shared = [shared_length(p["chosen"], p["rejected"]) for p in pairs]
    input_ids, position_ids, mask = shared_rows(
        [(p["chosen"][:n], [p["chosen"][n:], p["rejected"][n:]]) for p, n in zip(pairs, shared)], pad_id)
    width = input_ids.size(1)
    sequences = torch.zeros((len(pairs), 2, width), dtype=torch.long)  # which row tokens make up each answer's sequence
    used = []
    for row, (pair, n) in enumerate(zip(pairs, shared)):
        chosen, end = len(pair["chosen"]), len(pair["chosen"]) + len(pair["rejected"]) - n
        sequences[row, 0, :chosen] = 1
        sequences[row, 1, :n] = 1
        sequences[row, 1, chosen:end] = 1
        used.append(end)
    score_index = score_positions(input_ids.repeat_interleave(2, dim=0), sequences.view(-1, width), "end", pad_id,
                                  num_padding_at_beginning=0).view(len(pairs), 2)
    return {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": mask,
            "score_index": score_index, "num_tokens": torch.tensor(sum(used))}


def can_share_rows(model: PreTrainedModel, sequences: list[list[int]]) -> bool:
    """Whether scoring `sequences` in shared rows is exact and tested: not for a family outside SHARED_SCORING (a
    bidirectional encoder cannot share a prefix), a model under ZeRO-3 (every process must make the same calls), or
    a sequence holding the pad id (pipeline() would read before it)."""
    if dist.gathers_layers(model):
        return False
    config = dist.model_config(model)
    return (config.model_type in SHARED_SCORING and config.pad_token_id is not None
            and not any(config.pad_token_id in ids for ids in sequences))


@torch.no_grad()
def shared_row_scores(model: PreTrainedModel, groups: list[list[list[int]]], batch_size: int) -> list[list[float]]:
    """Each group's sequences scored in one row `[common start, rest_1, ..., rest_K]`, read at each sequence's last
    token, which is where pipeline() reads it. A batch holds whole groups, up to batch_size sequences (one group at
    least). Use where can_share_rows says so."""
    rows, ends = [], []
    for group in groups:
        n = shared_length(*group)
        rows.append((group[0][:n], [ids[n:] for ids in group]))
        end, last = n, []
        for ids in group:  # each sequence's last token: after the common start and the rests before its own
            end += len(ids) - n
            last.append(end - 1)
        ends.append(last)
    scorer, device, pad = RewardModel(model), dist.input_device(model), dist.model_config(model).pad_token_id
    scores, first = [], 0
    while first < len(groups):
        stop, size = first + 1, len(groups[first])
        while stop < len(groups) and size + len(groups[stop]) <= batch_size:
            size += len(groups[stop])
            stop += 1
        ids, positions, mask = (t.to(device) for t in shared_rows(rows[first:stop], pad))
        which = [(row, end) for row in range(stop - first) for end in ends[first + row]]
        values = scorer(ids, mask, positions).float()[[r for r, _ in which], [e for _, e in which]].tolist()
        for group in groups[first:stop]:
            scores.append(values[:len(group)])
            values = values[len(group):]
        first = stop
    return scores
