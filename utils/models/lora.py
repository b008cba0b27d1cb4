"""LoRA through PEFT, with DeepSpeed-Chat's flags. Training runs on the model with LoRA layers in place; the export
merges them into plain weights, so the result loads like any other model (and, with --save_adapter, the adapter is
kept as well)."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from transformers import PreTrainedModel

from utils.errors import UserError

HEADS = ("score", "lm_head")  # output heads never get adapters
SCORE_HEAD = "score"  # a reward model's head always trains in full
LORA_PARAM = "lora_"


def lora_config(model: PreTrainedModel, args: argparse.Namespace, keep_head: bool = False) -> LoraConfig:
    """DeepSpeed-Chat's --lora_module_name picks the linear layers whose names contain it."""
    targets = sorted(name for name, module in model.named_modules() if isinstance(module, nn.Linear)
                     and args.lora_module_name in name and name.split(".")[0] not in HEADS)
    if not targets:
        raise UserError(f"--lora_module_name {args.lora_module_name!r} matches no linear layer of "
                        f"{type(model).__name__}: use a part of its layer names, such as 'layers.'")
    head = [SCORE_HEAD] if keep_head and hasattr(model, SCORE_HEAD) else None
    return LoraConfig(r=args.lora_dim, lora_alpha=args.lora_alpha or args.lora_dim, lora_dropout=args.lora_dropout,
                      target_modules=targets, modules_to_save=head)


def add_lora(model: PreTrainedModel, args: argparse.Namespace) -> PreTrainedModel:
    """The same model with LoRA layers in place (nothing changes with --lora_dim 0). With --only_optimize_lora only
    the adapters and a reward model's score head train (a causal LM's head stays frozen: it may be tied to the
    embeddings); otherwise every weight does, as in DeepSpeed-Chat."""
    if not args.lora_dim:
        return model
    get_peft_model(model, lora_config(model, args))
    for name, param in model.named_parameters():
        if not args.only_optimize_lora or name.split(".")[0] == SCORE_HEAD:
            param.requires_grad_(True)
    return model


def is_lora_parameter(name: str) -> bool:
    return LORA_PARAM in name


def merge_lora(model: PreTrainedModel, state: dict[str, torch.Tensor], args: argparse.Namespace,
               adapter_dir: Path | None) -> tuple[PreTrainedModel, dict[str, torch.Tensor]]:
    """The gathered weights of a LoRA-trained model with the adapters merged in, on a fresh CPU copy (the trained
    model may be ZeRO-3 partitions); the adapter, with the score head, goes to adapter_dir if given."""
    fresh = type(model)(model.config)
    wrapped = get_peft_model(fresh, lora_config(fresh, args, keep_head=adapter_dir is not None))
    if adapter_dir is not None:  # the trained head goes to both places PEFT keeps it
        for key in [k for k in state if k.startswith(f"{SCORE_HEAD}.")]:
            value, rest = state.pop(key), key[len(SCORE_HEAD) + 1:]
            for place in ("original_module", "modules_to_save.default"):
                state[f"{SCORE_HEAD}.{place}.{rest}"] = value
    wrapped.get_base_model().load_state_dict(state)
    if adapter_dir is not None:
        wrapped.save_pretrained(adapter_dir)
    merged = wrapped.merge_and_unload()
    return merged, merged.state_dict()


class WithoutAdapters:
    """A LoRA-trained model seen with its adapters switched off: the model it started from, without a second copy.

    Step 3's reference when only the adapters train (--only_optimize_lora): the frozen weights are the starting
    policy's. It is called like the model, and its forward never records a graph."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def parameters(self):
        return self.model.parameters()

    @torch.no_grad()
    def __call__(self, **inputs: torch.Tensor) -> object:
        layers = [m for m in self.model.modules() if isinstance(m, BaseTunerLayer)]
        for layer in layers:
            layer.enable_adapters(False)
        try:
            return self.model(**inputs)
        finally:
            for layer in layers:
                layer.enable_adapters(True)
