"""Periodic checkpoints that a crash cannot leave half-written, and resuming from the newest complete one.

A checkpoint is DeepSpeed's own (model, optimizer, LR scheduler) plus each rank's RNG state and position.json, the
data position. It is written under a temporary name and renamed once every file is there; `latest` is then replaced
atomically, and only then are old checkpoints rotated away.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import deepspeed
import torch

from utils import distributed as dist
from utils.errors import RunError, UserError

CHECKPOINTS = "checkpoints"
LATEST = "latest"
POSITION = "position.json"  # written last: a checkpoint without it is incomplete


@dataclass(frozen=True)
class Position:
    """Where training stands: the data position is counted in micro-batches, which maps back to samples exactly."""

    step: int  # optimizer steps done
    micro_batches: int  # micro-batches each rank has consumed since the start, skipped ones included
    skipped_losses: int = 0  # micro-batches skipped for a non-finite loss (--on_nan skip)


def _setup(args: argparse.Namespace) -> dict[str, int | str]:
    """What a resumed run must share with the checkpoint: the data position, the ZeRO partitions and, in step 3,
    how the rollouts are sampled and learned from depend on it."""
    setup = {"world_size": dist.world_size(), "per_device_train_batch_size": args.per_device_train_batch_size,
             "gradient_accumulation_steps": args.gradient_accumulation_steps, "zero_stage": args.zero_stage}
    step3 = ("algo", "num_generations", "generation_batches", "ppo_epochs", "prompts_per_iteration", "reward_funcs",
             "reward_weights")
    return setup | {key: getattr(args, key) for key in step3 if hasattr(args, key)}


_SINCE = {"reward_funcs": [], "reward_weights": None}  # what a checkpoint written before these keys were saved had


def _complete(root: Path) -> list[Path]:
    """Complete checkpoints, oldest written first: after a --resume_from an earlier one, a higher step number is
    not the newer checkpoint."""
    found = [p for p in root.glob("step*") if (p / POSITION).is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: (p / POSITION).stat().st_mtime_ns)


def save_checkpoint(engine: deepspeed.DeepSpeedEngine, args: argparse.Namespace, position: Position,
                    companions: dict[str, deepspeed.DeepSpeedEngine] | None = None) -> Path:
    """Write the checkpoint of `position` under output_dir/checkpoints/step<N>, with each companion engine (PPO's
    critic) in a folder of its name; keep --save_total_limit of them."""
    root = Path(args.output_dir) / CHECKPOINTS
    final, tmp = root / f"step{position.step}", root / f".tmp-step{position.step}"
    try:
        if dist.is_main():
            for stale in root.glob(".tmp-step*"):  # left by a crash: never complete, never pointed to
                shutil.rmtree(stale)
        dist.barrier()
        engine.save_checkpoint(str(root), tag=tmp.name, save_latest=False)
        for name, companion in (companions or {}).items():
            companion.save_checkpoint(str(tmp), tag=name, save_latest=False)
        rng = {"cpu": torch.get_rng_state()} | ({"cuda": torch.cuda.get_rng_state()} if torch.cuda.is_available()
                                                 else {})
        torch.save(rng, tmp / f"rng_rank{dist.rank()}.pt")
        dist.barrier()
        if dist.is_main():
            (tmp / POSITION).write_text(json.dumps(asdict(position) | _setup(args), indent=2) + "\n")
            if final.exists():  # this step saved before (a preemption right after a periodic save)
                shutil.rmtree(final)
            os.rename(tmp, final)
            (root / ".latest.tmp").write_text(final.name)
            os.replace(root / ".latest.tmp", root / LATEST)
            for old in _complete(root)[:-args.save_total_limit]:  # the one just written is the newest
                shutil.rmtree(old)
    except OSError as err:
        raise RunError(f"cannot write the checkpoint {final}: {err}; the previous checkpoints are untouched") from None
    dist.barrier()
    return final


def find_checkpoint(args: argparse.Namespace) -> tuple[Path, Position] | None:
    """The checkpoint to resume from, checked before anything is loaded: --resume_from PATH, or --resume's latest
    (or the newest complete one, should latest name one that is gone)."""
    if args.resume_from:
        path = Path(args.resume_from)
        if not (path / POSITION).is_file():
            raise UserError(f"--resume_from {path}: not a complete checkpoint (no {POSITION})")
    elif args.resume:
        root = Path(args.output_dir) / CHECKPOINTS
        path = root / (root / LATEST).read_text().strip() if (root / LATEST).is_file() else None
        if path is None or not (path / POSITION).is_file():  # a crash while a step was saved twice
            complete = _complete(root)
            if not complete:
                return None
            path = complete[-1]
    else:
        return None
    saved = json.loads((path / POSITION).read_text())
    for key, now in _setup(args).items():
        then = saved.get(key, _SINCE.get(key))
        if then != now:
            raise UserError(f"cannot resume from {path}: it was written with {key.replace('_', ' ')} {then}, "
                            f"this run has {now}; resume with the same value (the data position, the ZeRO "
                            "partitions and the rollouts depend on it)")
    return path, Position(**{k: saved[k] for k in ("step", "micro_batches", "skipped_losses")})


def load_checkpoint(engine: deepspeed.DeepSpeedEngine, path: Path,
                    companions: dict[str, deepspeed.DeepSpeedEngine] | None = None) -> None:
    """Model, optimizer, scheduler (the companion engines' too) and this rank's RNG state, exactly as saved."""
    targets = [(path.parent, path.name, engine)] + [(path, name, e) for name, e in (companions or {}).items()]
    for folder, tag, target in targets:
        loaded, _ = target.load_checkpoint(str(folder), tag=tag, load_optimizer_states=True,
                                           load_lr_scheduler_states=True)
        if loaded is None:
            raise RunError(f"DeepSpeed could not load the checkpoint {folder / tag}")
    rng = torch.load(path / f"rng_rank{dist.rank()}.pt", weights_only=True)
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
