"""The DeepSpeed configuration, built from the flags (and optionally overridden by --deepspeed_config)."""
from __future__ import annotations

import argparse
import json
from typing import Any

from utils.errors import UserError


def resolve_dtype(dtype: str | None, on_gpu: bool) -> str:
    """fp16 on GPU as DeepSpeed-Chat does, fp32 on CPU where fp16 does not run."""
    if dtype is None:
        return "fp16" if on_gpu else "fp32"
    if dtype == "fp16" and not on_gpu:
        raise UserError("--dtype fp16 does not run on CPU: use --dtype bf16 or --dtype fp32")
    return dtype


def deepspeed_config(args: argparse.Namespace, world_size: int, dtype: str) -> dict[str, Any]:
    if args.offload and args.zero_stage == 0:
        raise UserError("--offload needs --zero_stage 1, 2 or 3")
    for flag in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag} must be at least 1")
    zero: dict[str, Any] = {"stage": args.zero_stage}
    if args.offload:
        zero["offload_optimizer"] = {"device": "cpu"}
        if args.zero_stage == 3:
            zero["offload_param"] = {"device": "cpu"}
    if args.zero_stage == 3:
        zero.update(stage3_param_persistence_threshold=1e4, stage3_max_live_parameters=3e7,
                    stage3_prefetch_bucket_size=3e7)
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "train_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * world_size,
        "gradient_clipping": 1.0,
        "zero_optimization": zero,
        "bf16": {"enabled": dtype == "bf16"},
        "fp16": {"enabled": dtype == "fp16", "loss_scale_window": 100},
        "steps_per_print": 10**9,  # our own progress bar and log report progress
        "wall_clock_breakdown": False,
    }
    if args.deepspeed_config:
        try:
            with open(args.deepspeed_config) as handle:
                config.update(json.load(handle))
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"--deepspeed_config {args.deepspeed_config}: {err}") from None
    return config


def frozen_config(trained: dict[str, Any], offload: bool) -> dict[str, Any]:
    """The trained model's ZeRO-3 settings for a model that is never trained (step 3's reference and reward model):
    no optimizer, and with `offload` its parameters kept on the CPU between the layer-by-layer gathers."""
    zero = {key: value for key, value in trained["zero_optimization"].items() if not key.startswith("offload_")}
    if offload:
        zero["offload_param"] = {"device": "cpu"}
    kept = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size", "bf16", "fp16",
            "steps_per_print", "wall_clock_breakdown")
    return {key: trained[key] for key in kept if key in trained} | {"zero_optimization": zero}
