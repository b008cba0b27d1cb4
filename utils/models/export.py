"""Saving a trained model as a plain Hugging Face directory, gathering ZeRO-3 shards first."""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Any

import deepspeed
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from utils.distributed import barrier, is_main
from utils.errors import RunError
from utils.models.lora import merge_lora
from utils.models.portable import make_portable
from utils.run_files import FINISHED

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
                 extra_files: dict[str, Any] | None = None, lora: argparse.Namespace | None = None) -> None:
    """config.json, model.safetensors and the full tokenizer, loadable by from_pretrained and pipeline().

    Everything is written to a temporary folder first and then moved in, FINISHED last, an earlier FINISHED removed
    first: a crash or a full disk never leaves a half-written model that looks finished, and other files already
    there stay until replaced.
    `lora` (the run's flags, for a LoRA run): the adapters are merged in, and kept in adapter/ on --save_adapter.
    """
    state = full_state_dict(model, zero_stage)
    if is_main():
        out = Path(out_dir)
        tmp = out / ".tmp-export"
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            if lora is not None:
                model, state = merge_lora(model, state, lora, tmp / "adapter" if lora.save_adapter else None)
            model.save_pretrained(tmp, state_dict=state)
            tokenizer.save_pretrained(tmp)
            make_portable(tmp, tokenizer)
            for name, content in (extra_files or {}).items():  # text as it is, anything else as JSON
                text = content if isinstance(content, str) else json.dumps(content, indent=2, default=str) + "\n"
                (tmp / name).write_text(text)
            (out / FINISHED).unlink(missing_ok=True)  # an earlier run's results must not sit beside new weights
            for path in sorted(tmp.iterdir(), key=lambda p: p.name == FINISHED):
                if path.is_dir():  # a folder (the adapter) replaces the old one whole
                    shutil.rmtree(out / path.name, ignore_errors=True)
                os.replace(path, out / path.name)
            tmp.rmdir()
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)  # frees what a full disk let through
            raise RunError(f"cannot write the model to {out}: {err}") from None
    barrier()
