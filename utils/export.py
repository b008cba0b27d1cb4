"""Saving a trained model as a plain Hugging Face directory, gathering ZeRO-3 shards first."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import deepspeed
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from utils.distributed import barrier, is_main


def full_state_dict(model: PreTrainedModel, zero_stage: int) -> dict[str, torch.Tensor]:
    """The complete weights on rank 0 (empty elsewhere), one gathered parameter at a time under ZeRO-3."""
    if zero_stage < 3:
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()} if is_main() else {}
    params = dict(model.named_parameters(remove_duplicate=False))
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        tensor = params.get(key)
        if tensor is None:  # a buffer: never partitioned
            state[key] = value.detach().cpu().clone()
            continue
        with deepspeed.zero.GatheredParameters([tensor], modifier_rank=None):
            if is_main():
                state[key] = tensor.detach().cpu().clone()
    return state if is_main() else {}


def export_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: str | Path, zero_stage: int,
                 extra_files: dict[str, Any] | None = None) -> None:
    """config.json, model.safetensors and the full tokenizer, loadable by from_pretrained and pipeline()."""
    state = full_state_dict(model, zero_stage)
    if is_main():
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out, state_dict=state)
        tokenizer.save_pretrained(out)
        for name, content in (extra_files or {}).items():
            (out / name).write_text(json.dumps(content, indent=2, default=str) + "\n")
    barrier()
