"""DPO's --precompute_ref_log_probs: every pair's reference log-probabilities computed in one pass before training and
kept in the output folder, so that the reference is freed for the whole run and a resumed run reads them back."""
from __future__ import annotations

import argparse
import functools
import gc
import json
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from utils import distributed as dist
from utils.data.cache import fingerprint
from utils.errors import UserError
from utils.objectives.dpo import Pair, answer_log_probs, collate_preferences

REFERENCE_FILE = "reference_log_probs.json"  # kept for --resume


def precompute_reference(reference: nn.Module, pairs: list[Pair], pad_id: int, shared: bool, batch_size: int
                         ) -> list[list[float]]:
    """Each pair's reference log-probabilities [chosen, rejected], computed once before training, so that the
    reference need not stay loaded. Each process computes a share; every process makes the same number of passes
    (a partitioned reference gathers its layers in each), then all shares are gathered."""
    collate = functools.partial(collate_preferences, pad_id=pad_id, shared=shared)
    chunks = [list(range(i, min(i + batch_size, len(pairs)))) for i in range(0, len(pairs), batch_size)]
    mine = chunks[dist.rank()::dist.world_size()]
    passes = -(-len(chunks) // dist.world_size())
    found: dict[int, list[float]] = {}
    with torch.no_grad():
        for n in tqdm(range(passes), desc="reference log-probs", disable=not dist.is_main()):
            chunk = mine[min(n, len(mine) - 1)] if mine else chunks[0]  # a spare pass repeats a chunk
            values = answer_log_probs(reference, collate([pairs[i] for i in chunk])).cpu().tolist()
            found |= {i: [c, r] for i, c, r in zip(chunk, values[:len(chunk)], values[len(chunk):])}
    merged = {i: v for part in dist.gather_objects(found) for i, v in part.items()}
    return [merged[i] for i in range(len(pairs))]


def _save(args: argparse.Namespace, train: list[Pair], held_out: list[Pair], values: list[list[list[float]]]
          ) -> None:
    if dist.is_main():
        path = Path(args.output_dir) / REFERENCE_FILE
        record = {"pairs": fingerprint([train, held_out]), "train": values[0], "eval": values[1]}
        path.with_suffix(".tmp").write_text(json.dumps(record))
        path.with_suffix(".tmp").replace(path)


def saved_reference_log_probs(args: argparse.Namespace, train: list[Pair], held_out: list[Pair], resuming: bool
                              ) -> list[list[list[float]]] | None:
    """A resumed run's precomputed log-probs, if they were computed on these very pairs; a resume on other pairs
    is refused, since its checkpoint's data position and reference would not match them. A new run computes its
    own."""
    path = Path(args.output_dir) / REFERENCE_FILE
    if not resuming or not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record["pairs"] != fingerprint([train, held_out]):
        raise UserError(f"--precompute_ref_log_probs: {path} was computed on other pairs than this run reads (the "
                        "data, --data_split, --max_seq_len or the template changed since the run started); resume "
                        "with the same data, or start over with --overwrite_output_dir")
    return [record["train"], record["eval"]]


def precompute_and_free(args: argparse.Namespace, reference: nn.Module, splits: tuple[list[Pair], list[Pair]],
                        pad_id: int, log: Callable[[str], None]) -> list[list[list[float]]]:
    """The log-probs of every pair of both splits, saved for a resume; the reference is then no longer needed."""
    values = [precompute_reference(reference, pairs, pad_id, not args.no_shared_prompt, args.per_device_eval_batch_size)
              for pairs in splits]
    _save(args, *splits, values)
    log("reference log-probs computed for every pair and kept in --output_dir; the reference is freed")
    gc.collect()
    return values


def attach(splits: tuple[list[Pair], list[Pair]], values: list[list[list[float]]]) -> None:
    """Each pair carries its reference log-probs [chosen, rejected] into its batch, where DPOObjective reads them."""
    for pairs, split_values in zip(splits, values):
        for pair, value in zip(pairs, split_values):
            pair["ref"] = value
