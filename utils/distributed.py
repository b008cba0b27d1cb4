"""Process-group setup that works the same under `deepspeed`, `torchrun` and plain `python`."""
from __future__ import annotations

import os
import socket
from typing import Any

import torch
import torch.distributed as dist


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_distributed() -> None:
    """Start the process group; a plain `python` run becomes a world of one.

    The launchers set RANK, WORLD_SIZE and friends; plain `python` sets none, and DeepSpeed needs them.
    """
    import deepspeed

    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() == "cpu":
        _skip_shm_all_reduce_build()
    if not dist.is_initialized():
        deepspeed.init_distributed()
    if get_accelerator().device_name() == "cuda":
        torch.cuda.set_device(local_rank())


def _skip_shm_all_reduce_build() -> None:
    """Keep DeepSpeed from JIT-building its CPU shared-memory all-reduce, which only inference uses.

    Every process takes a file lock in ~/.cache/torch_extensions to check that build; a process killed while holding
    it (a preempted or SIGKILLed run) leaves the lock behind, and every later run then waits on it forever.
    """
    import deepspeed.ops
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder

    deepspeed.ops.__compatible_ops__[ShareMemCommBuilder.NAME] = False


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def device() -> torch.device:
    from deepspeed.accelerator import get_accelerator

    name = get_accelerator().device_name()
    return torch.device(name, local_rank()) if name == "cuda" else torch.device(name)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's object, in rank order, on every rank."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def mean_across_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over the ranks, in one all-reduce (it runs on every optimizer step)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device())
    dist.all_reduce(t)
    return dict(zip(values, (t / dist.get_world_size()).tolist()))


def sum_across_ranks(value: torch.Tensor) -> torch.Tensor:
    """The sum of a tensor over the ranks (a copy; the input is left alone)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total


def max_across_ranks(value: int) -> int:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    t = torch.tensor([value], device=device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def gathers_layers(model: Any) -> bool:
    """Whether `model` is a DeepSpeed engine under ZeRO-3: its forward gathers each layer from every process, so
    every process must call it equally often, or the others wait forever."""
    return getattr(model, "zero_optimization_stage", lambda: 0)() == 3


def input_device(model: Any) -> torch.device:
    """Where a model's inputs go: a DeepSpeed engine's device, which ZeRO-3's offloaded weights do not show."""
    return model.device if hasattr(model, "zero_optimization_stage") else next(model.parameters()).device


def model_config(model: Any) -> Any:
    """A model's Hugging Face config, also when a DeepSpeed engine wraps it (the engine's own `config` is
    DeepSpeed's)."""
    return getattr(model, "module", model).config


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
