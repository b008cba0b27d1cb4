"""The one DeepSpeed engine and training loop that every step runs: steps differ only in their loss and eval."""
from __future__ import annotations

import argparse
import functools
import sys
import time
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterator

import deepspeed
import torch
from deepspeed.accelerator import get_accelerator
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm
from transformers import get_scheduler

from utils import distributed as dist
from utils.data.sampling import TrainSampler
from utils.engine.checkpoint import Position, load_checkpoint, save_checkpoint
from utils.engine.ds_config import frozen_config
from utils.engine.guards import (
    Preemption,
    checked_grad_norm,
    keep_clipping_norm,
    plain_grad_norm,
    skip_non_finite_loss,
)
from utils.engine.run_log import RunLog
from utils.engine.throughput import Throughput, measured_peak_flops
from utils.errors import BatchFailed, Preempted, RunError
from utils.models.lora import is_lora_parameter

Batch = dict[str, torch.Tensor]
EvalFn = Callable[[], dict[str, float]]


class Objective:
    """What the shared loop trains. A step's objective turns a loader batch into a loss and the figures to log
    (`__call__`), or, overriding `updates`, into several, each one update of the engine: PPO's epochs over its
    rollouts, online DPO's pairs. `updates_per_batch` says how many, for the schedule and the checkpoints, which fall
    after a batch's last update."""

    progress_keys: tuple[str, ...] = ()  # the few figures the progress bar shows; none named: all of them

    def updates(self, model: nn.Module, batch: Batch) -> Iterator[tuple[torch.Tensor, dict[str, float]]]:
        yield self(model, batch)

    @property
    def updates_per_batch(self) -> int:
        return 1

    @property
    def companions(self) -> dict[str, nn.Module]:
        """Engines checkpointed with the model's (PPO's critic)."""
        return {}


def on_gpu() -> bool:
    return get_accelerator().device_name() == "cuda"


def zero3_loading(ds_config: dict[str, Any]) -> object | None:
    """Under ZeRO-3, from_pretrained must load partitioned weights; keep the returned object alive while training."""
    if ds_config["zero_optimization"]["stage"] != 3:
        return None
    from transformers.integrations import HfDeepSpeedConfig

    return HfDeepSpeedConfig(ds_config)


@contextmanager
def loaded_with(zero3: object | None, config: dict[str, Any] | None = None) -> Iterator[None]:
    """Load models under another ZeRO-3 configuration than the trained model's (zero3: what zero3_loading returned):
    partitioned as `config` says, or whole on every process when it is None (a critic whose engine has another
    stage partitions what it needs itself)."""
    if zero3 is None:
        yield
        return
    from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    other = zero3_loading(config) if config else None  # registers itself with transformers while it lives
    try:
        yield
    finally:
        del other
        set_hf_deepspeed_config(zero3)


def frozen_model(model: nn.Module, ds_config: dict[str, Any], offload: bool, device: torch.device) -> nn.Module:
    """A model that runs but never trains (step 3's reference and reward model). Under ZeRO-3 an inference engine
    partitions it like the trained model and gathers it layer by layer, so every process must call it equally
    often; otherwise it is whole on every process. `offload` keeps its weights on the CPU."""
    if ds_config["zero_optimization"]["stage"] != 3:
        return model.to("cpu" if offload else device)
    engine, *_ = deepspeed.initialize(model=model, config=frozen_config(ds_config, offload))
    engine.module.eval()
    return engine


def train_loader(dataset: list, batch_size: int, collate: Callable, seed: int,
                 lengths: list[int] | None = None) -> DataLoader:
    """Seeded global batches, the same for any number of processes; grouped by length when `lengths` is given."""
    sampler = TrainSampler(len(dataset), batch_size, seed, dist.world_size(), dist.rank(), lengths)
    # Its own generator: each new iterator draws a seed from it, which would otherwise shift the global RNG (and
    # the dropout masks) of a run resumed mid-epoch.
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate,
                      generator=torch.Generator().manual_seed(seed))


def eval_loader(dataset: list, batch_size: int, collate: Callable) -> DataLoader:
    """A disjoint, unpadded share per rank, so gathered metrics count every eval row exactly once."""
    return DataLoader(dataset[dist.rank()::dist.world_size()], batch_size=batch_size, collate_fn=collate)


def eval_batches(model: nn.Module, loader: DataLoader, max_batches: int) -> Iterator[Batch]:
    """At most max_batches batches on the model's device, with a progress bar on an interactive rank 0."""
    device = getattr(model, "device", None) or next(model.parameters()).device
    for batch in tqdm(islice(loader, max_batches), total=min(len(loader), max_batches), desc="eval", leave=False,
                      disable=not dist.is_main() or not sys.stderr.isatty()):
        yield {k: v.to(device) for k, v in batch.items()}


def _param_groups(model: nn.Module, weight_decay: float, lora_lr: float) -> list[dict[str, Any]]:
    """No weight decay on biases and norm weights, as DeepSpeed-Chat does; LoRA adapters at their own rate."""
    decay, no_decay, lora = [], [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            ndim = len(getattr(param, "ds_shape", param.shape))  # ZeRO-3 partitions hold flat shards
            skip = name.endswith("bias") or "norm" in name.lower() or ndim < 2
            (lora if is_lora_parameter(name) else no_decay if skip else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0},
              {"params": lora, "weight_decay": 0.0, "lr": lora_lr}]
    return [group for group in groups if group["params"]]


def build_engine(module: nn.Module, args: argparse.Namespace, ds_config: dict[str, Any],
                 total_steps: int) -> deepspeed.DeepSpeedEngine:
    """Fused AdamW on CPU (torch's, as TRL uses), FusedAdam on GPU, DeepSpeedCPUAdam with --offload; a transformers LR
    schedule."""
    groups = _param_groups(module, args.weight_decay, args.lora_learning_rate)
    if args.offload:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        optimizer = DeepSpeedCPUAdam(groups, lr=args.learning_rate, betas=(0.9, 0.95))
    elif on_gpu():
        from deepspeed.ops.adam import FusedAdam

        optimizer = FusedAdam(groups, lr=args.learning_rate, betas=(0.9, 0.95))
    else:
        optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, betas=(0.9, 0.95), fused=True)

    def scheduler(wrapped: torch.optim.Optimizer):  # built on DeepSpeed's wrapper of the optimizer
        return get_scheduler(args.lr_scheduler_type, wrapped, num_warmup_steps=args.num_warmup_steps,
                             num_training_steps=total_steps)

    engine, *_ = deepspeed.initialize(model=module, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
    skip_lone_allreduce(engine)
    keep_clipping_norm(engine)
    return engine


def skip_lone_allreduce(engine: deepspeed.DeepSpeedEngine) -> None:
    """A lone data-parallel process has no gradients to average, yet DeepSpeed's stage-0 all-reduce flattens, scales
    and copies back every gradient at each step: about 9% of a step-2 step on CPU, and gradients are the same
    without it. ZeRO stages keep it: their reduction also partitions the gradients."""
    if engine.dp_world_size == 1 and engine.zero_optimization_stage() == 0:
        engine.enable_backward_allreduce = False


def optimizer_steps(loader: DataLoader, args: argparse.Namespace, updates_per_batch: int = 1) -> int:
    """DeepSpeed steps the optimizer on every gradient_accumulation_steps-th update, across epoch borders; a batch
    gives one update, or updates_per_batch (PPO's epochs over its rollouts)."""
    return max(1, len(loader) * args.num_train_epochs * updates_per_batch // args.gradient_accumulation_steps)


def _checkpoint_on_failure(updates: Iterator[tuple[torch.Tensor, dict[str, float]]], save: Callable[[], Path] | None
                           ) -> Iterator[tuple[torch.Tensor, dict[str, float]]]:
    """A batch's updates; a BatchFailed before the first saves a checkpoint at the batch's start (`save`, None in
    the middle of gradient accumulation, whose gradients a checkpoint does not hold) and stops the run."""
    try:
        first = next(updates, None)
    except BatchFailed as err:
        if save is None:
            raise RunError(f"{err}; no checkpoint was saved (gradients were accumulating): resume from the last one "
                           "with --resume") from None
        raise RunError(f"{err}; checkpoint saved in {save()}: run again with --resume once it is fixed") from None
    if first is not None:
        yield first
        yield from updates


def _evaluate(engine: deepspeed.DeepSpeedEngine, evaluate: EvalFn, log: RunLog, step: int) -> dict[str, float]:
    engine.eval()
    with torch.no_grad():
        metrics = evaluate()
    engine.train()
    log.record("eval", step, metrics)
    log.info(f"eval @ step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()
                                                 if isinstance(v, (int, float))))
    return metrics


def _peak_flops(engine: deepspeed.DeepSpeedEngine, args: argparse.Namespace) -> float:
    if args.peak_tflops:
        return args.peak_tflops * 1e12
    dtype = torch.bfloat16 if engine.bfloat16_enabled() else torch.float16 if engine.fp16_enabled() else torch.float32
    return measured_peak_flops(engine.device, dtype)


def train(engine: deepspeed.DeepSpeedEngine, loader: DataLoader, args: argparse.Namespace, objective: Objective,
          evaluate: EvalFn, log: RunLog, resume: tuple[Path, Position] | None = None) -> dict[str, float]:
    """Evaluate, train for --num_train_epochs with periodic evals and checkpoints, and return the final evaluation.

    A resumed run restores the checkpoint and continues on the batches an uninterrupted run would have read next.
    """
    per_batch, companions = objective.updates_per_batch, objective.companions
    total = optimizer_steps(loader, args, per_batch)
    position = Position(0, 0)
    engine.train()  # from_pretrained leaves the model in eval mode, dropout off
    if resume is not None:
        load_checkpoint(engine, resume[0], companions)
        position = resume[1]
        log.info(f"resumed from {resume[0]} at step {position.step}")
    else:
        _evaluate(engine, evaluate, log, step=0)
    preemption = Preemption()
    throughput = Throughput(engine.module, _peak_flops(engine, args))
    bar = tqdm(total=total, initial=position.step, desc="train", disable=not dist.is_main(), dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 30)  # logs get a line every 30 s, not every step
    window: dict[str, list[float]] = {}
    consumed, skipped = position.micro_batches, position.skipped_losses
    per_epoch = len(loader)
    started = time.perf_counter()
    save_due = stopping = accumulating = False  # checkpoints fall between batches, where the data position says it all
    for epoch in range(consumed // per_epoch, args.num_train_epochs):
        loader.sampler.set_epoch(epoch)
        loader.sampler.skip = (consumed - epoch * per_epoch) * loader.batch_size
        for batch in loader:
            consumed += 1
            batch = {k: v.to(engine.device) for k, v in batch.items()}
            at_start = Position(step=engine.global_steps, micro_batches=consumed - 1, skipped_losses=skipped)
            save = None if accumulating else functools.partial(save_checkpoint, engine, args, at_start, companions)
            for update, (loss, stats) in enumerate(_checkpoint_on_failure(objective.updates(engine, batch), save),
                                                   start=1):
                if skip_non_finite_loss(loss, engine, args, log, skipped):
                    skipped += 1
                    continue
                throughput.add(batch)
                engine.backward(loss)
                before = engine.global_steps
                plain_norm = plain_grad_norm(engine)
                engine.step()
                for key, value in {"loss": loss.item(), **stats}.items():
                    window.setdefault(key, []).append(value)
                accumulating = engine.global_steps == before
                if accumulating:
                    continue
                step = engine.global_steps
                norm = checked_grad_norm(engine, plain_norm, args)
                metrics = dist.mean_across_ranks({k: sum(v) / len(v) for k, v in window.items()}
                                                 | throughput.counts()
                                                 | {"stop": float(preemption.requested)})  # one rank is enough
                stopping |= metrics.pop("stop") > 0 and step < total  # at the last step, the run just finishes
                counts = {key: metrics.pop(key) * dist.world_size() for key in ("tokens", "positions")}
                metrics.update(lr=engine.get_lr()[0], epoch=epoch, elapsed_s=time.perf_counter() - started,
                               fp16_overflow_skips=engine.skipped_steps, skipped_losses=skipped, **counts,
                               **throughput.step(counts["tokens"], counts["positions"], dist.world_size()))
                if norm is not None:
                    metrics["grad_norm"] = norm
                window.clear()
                log.record("train", step, metrics)
                if args.print_loss:
                    log.info(f"epoch {epoch} step {step}: loss {metrics['loss']:.4f}")
                bar.update(1)
                keys = objective.progress_keys or stats
                shown = {"loss": f"{metrics['loss']:.4f}"} | {k: f"{stats[k]:.3f}" for k in keys} | {
                    "tok/s": f"{metrics['tokens_per_s']:.0f}", "mfu": f"{metrics['mfu']:.1%}"}
                bar.set_postfix(shown, refresh=False)
                save_due |= bool(args.save_interval) and step % args.save_interval == 0
                if (save_due or stopping) and update == per_batch:
                    position = Position(step=step, micro_batches=consumed, skipped_losses=skipped)
                    path = save_checkpoint(engine, args, position, companions)
                    log.info(f"checkpoint saved: {path}")
                    save_due = False
                    if stopping and step < total:  # a request the last update reaches lets the run finish
                        raise Preempted(f"checkpoint saved at step {step} in {path}; run again with --resume")
                if args.eval_interval and step % args.eval_interval == 0 and step < total:
                    _evaluate(engine, evaluate, log, step)
                throughput.restart()
    bar.close()
    return _evaluate(engine, evaluate, log, step=engine.global_steps)
