"""Tokens per second, padding, model FLOPs utilization (MFU) and peak GPU memory, logged with every optimizer step.

MFU is 6 * N * tokens/s over the peak of all devices: 6 FLOPs per parameter per token for the forward and backward
passes (attention's own FLOPs left out, as usual), where N leaves out the embedding tables (lookups, not matmuls)
and tokens are the positions that were computed and are not padding. The peak per device is --peak_tflops, or else measured by a matmul in the training dtype at start, which
is what the hardware reaches in practice rather than its datasheet figure.
"""
from __future__ import annotations

import time

import torch
from torch import nn

MATMUL_SIZE = {"cpu": 1024, "cuda": 8192}


def measured_peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    size = MATMUL_SIZE.get(device.type, 4096)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=torch.Generator(device).manual_seed(0))
    a @ a  # warm-up
    reps = 10
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(reps):
        a @ a
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return reps * 2 * size ** 3 / (time.perf_counter() - started)


def _numel(param: nn.Parameter) -> int:
    return getattr(param, "ds_numel", param.numel())  # ZeRO-3 holds shards


def matmul_parameters(module: nn.Module) -> int:
    """Parameters that each token multiplies through: all but the embedding tables, which are lookups, yet with an
    output layer tied to the token embeddings, which is a matmul over the vocabulary."""
    tables = {id(p) for m in module.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    count = sum(_numel(p) for p in module.parameters() if id(p) not in tables)
    for m in module.modules():
        output = m.get_output_embeddings() if hasattr(m, "get_output_embeddings") else None
        if output is not None and id(output.weight) in tables:
            return count + _numel(output.weight)
    return count


class Throughput:
    """Counts one optimizer step's tokens on this rank; `step` turns the totals of all ranks into rates."""

    def __init__(self, module: nn.Module, peak_flops_per_device: float) -> None:
        self.flops_per_token = 6 * matmul_parameters(module)
        self.peak = peak_flops_per_device
        self.tokens = self.positions = 0
        self.since = time.perf_counter()

    def restart(self) -> None:
        """Leave out of the next step's time what is not training (an evaluation, a checkpoint)."""
        self.since = time.perf_counter()

    def add(self, batch: dict[str, torch.Tensor]) -> None:
        self.tokens += int(batch["num_tokens"])
        self.positions += batch["input_ids"].numel()

    def counts(self) -> dict[str, float]:
        return {"tokens": float(self.tokens), "positions": float(self.positions)}

    def step(self, tokens: float, positions: float, world_size: int) -> dict[str, float]:
        """Rates for the step just ended, from the token counts summed over the ranks."""
        now = time.perf_counter()
        per_s = tokens / max(now - self.since, 1e-9)
        self.tokens = self.positions = 0
        self.since = now
        return {"tokens_per_s": per_s, "pad_fraction": 1 - tokens / max(positions, 1),
                "mfu": self.flops_per_token * per_s / (self.peak * world_size)} | peak_memory()


def peak_memory() -> dict[str, float]:
    """The most GPU memory this process has held since it started, in GiB; nothing off the GPU."""
    if not torch.cuda.is_available():
        return {}
    return {"peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30}


def weights_gib(module: nn.Module) -> float:
    """The weights this process holds for `module`, in GiB: under ZeRO-3, its own partition only."""
    module = getattr(module, "module", module)
    held = (getattr(p, "ds_tensor", p) for p in module.parameters())
    return sum(t.numel() * t.element_size() for t in held) / 2**30
