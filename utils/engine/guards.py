"""What stops or skips a training step: a preemption signal, and non-finite losses and gradient norms."""
from __future__ import annotations

import argparse
import math
import signal
from pathlib import Path

import deepspeed
import torch

from utils import distributed as dist
from utils.engine.checkpoint import CHECKPOINTS, LATEST
from utils.engine.run_log import RunLog
from utils.errors import RunError


class Preemption:
    """SIGTERM and SIGUSR1 (what SLURM sends before it kills a job) ask the loop to stop after its current step."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._request)

    def _request(self, signum: int, frame: object) -> None:
        self.requested = True


def skip_non_finite_loss(loss: torch.Tensor, engine: deepspeed.DeepSpeedEngine, args: argparse.Namespace,
                         log: RunLog, skipped: int) -> bool:
    """Whether to skip this micro-batch (--on_nan skip); --on_nan stop raises instead.

    Every rank takes part, so that all of them skip together, or their collectives would part.
    """
    bad = torch.tensor(0.0 if torch.isfinite(loss.detach()).all() else 1.0, device=loss.device)
    if dist.sum_across_ranks(bad).item() == 0:
        return False
    step = engine.global_steps + 1
    if args.on_nan == "stop":
        raise RunError(f"step {step}: the loss is not finite (nan or inf); {_last_checkpoint(args)}. Lower "
                        "--learning_rate, use --dtype bf16 or fp32, or --on_nan skip")
    log.info(f"step {step}: skipped a micro-batch with a non-finite loss ({skipped + 1} so far)")
    return True


def keep_clipping_norm(engine: deepspeed.DeepSpeedEngine) -> None:
    """Where DeepSpeed clips fp32 gradients itself (no ZeRO, no fp16 or bf16 optimizer), it computes their norm,
    throws it away and reports none, so the guard used to take a second pass. One fused pass now clips and keeps the
    norm where get_global_grad_norm() reads it: about 1% of a step-2 step on CPU. Gradients are already averaged
    over the processes here, so every one computes the same norm."""

    def clip() -> None:
        params = [p for p in engine.module.parameters() if p.grad is not None]
        engine._global_grad_norm = torch.nn.utils.clip_grad_norm_(params, engine.gradient_clipping(), foreach=True)

    engine.clip_fp32_gradients = clip


def plain_grad_norm(engine: deepspeed.DeepSpeedEngine) -> float | None:
    """The gradient norm of the step about to be taken, where neither DeepSpeed's optimizer nor its clipping (see
    keep_clipping_norm) reports one: fp32 without ZeRO, with gradient_clipping 0."""
    if (hasattr(engine.optimizer, "_global_grad_norm") or engine.gradient_clipping() > 0
            or not engine.is_gradient_accumulation_boundary()):
        return None
    grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads).item() if grads else None


def checked_grad_norm(engine: deepspeed.DeepSpeedEngine, plain_norm: float | None,
                      args: argparse.Namespace) -> float | None:
    """The norm of the step just taken; a non-finite one stops the run, except under fp16, whose overflow steps
    DeepSpeed skips itself (and counts)."""
    norm = engine.get_global_grad_norm() if plain_norm is None else plain_norm
    norm = None if norm is None else float(norm)  # ZeRO's and ours are tensors
    if norm is not None and not math.isfinite(norm) and not engine.fp16_enabled():
        raise RunError(f"step {engine.global_steps}: the gradient norm is {norm}, and the update is applied, so "
                        f"the weights are lost; {_last_checkpoint(args)}. Resume from it (--resume) with a lower "
                        "--learning_rate")
    return norm


def _last_checkpoint(args: argparse.Namespace) -> str:
    latest = Path(args.output_dir) / CHECKPOINTS / LATEST
    if latest.is_file():
        return f"the last good checkpoint is {latest.parent / latest.read_text().strip()}"
    return "no checkpoint was saved yet (see --save_interval)"
