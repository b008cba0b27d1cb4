"""The one DeepSpeed engine and training loop that every step runs: steps differ only in their loss and eval."""
from __future__ import annotations

import argparse
import sys
import time
from itertools import islice
from typing import Any, Callable, Iterator

import deepspeed
import torch
from deepspeed.accelerator import get_accelerator
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm
from transformers import get_scheduler

from utils import distributed as dist
from utils.run_log import RunLog

Batch = dict[str, torch.Tensor]
LossFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, dict[str, float]]]
EvalFn = Callable[[], dict[str, float]]


def on_gpu() -> bool:
    return get_accelerator().device_name() == "cuda"


def zero3_loading(ds_config: dict[str, Any]) -> object | None:
    """Under ZeRO-3, from_pretrained must load partitioned weights; keep the returned object alive while training."""
    if ds_config["zero_optimization"]["stage"] != 3:
        return None
    from transformers.integrations import HfDeepSpeedConfig

    return HfDeepSpeedConfig(ds_config)


def train_loader(dataset: list, batch_size: int, collate: Callable, seed: int) -> DataLoader:
    """Each rank reads every world_size-th sample of one seeded permutation, so the global batch does not depend
    on the number of processes."""
    sampler = DistributedSampler(dataset, num_replicas=dist.world_size(), rank=dist.rank(), shuffle=True, seed=seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate)


def eval_loader(dataset: list, batch_size: int, collate: Callable) -> DataLoader:
    """A disjoint, unpadded share per rank, so gathered metrics count every eval row exactly once."""
    return DataLoader(dataset[dist.rank()::dist.world_size()], batch_size=batch_size, collate_fn=collate)


def eval_batches(model: nn.Module, loader: DataLoader, max_batches: int) -> Iterator[Batch]:
    """At most max_batches batches on the model's device, with a progress bar on an interactive rank 0."""
    device = getattr(model, "device", None) or next(model.parameters()).device
    for batch in tqdm(islice(loader, max_batches), total=min(len(loader), max_batches), desc="eval", leave=False,
                      disable=not dist.is_main() or not sys.stderr.isatty()):
        yield {k: v.to(device) for k, v in batch.items()}


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and norm weights, as DeepSpeed-Chat does."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            ndim = len(getattr(param, "ds_shape", param.shape))  # ZeRO-3 partitions hold flat shards
            skip = name.endswith("bias") or "norm" in name.lower() or ndim < 2
            (no_decay if skip else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def build_engine(module: nn.Module, args: argparse.Namespace, ds_config: dict[str, Any],
                 total_steps: int) -> deepspeed.DeepSpeedEngine:
    """AdamW on CPU, FusedAdam on GPU, DeepSpeedCPUAdam with --offload; a transformers LR schedule."""
    groups = _param_groups(module, args.weight_decay)
    if args.offload:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        optimizer = DeepSpeedCPUAdam(groups, lr=args.learning_rate, betas=(0.9, 0.95))
    elif on_gpu():
        from deepspeed.ops.adam import FusedAdam

        optimizer = FusedAdam(groups, lr=args.learning_rate, betas=(0.9, 0.95))
    else:
        optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, betas=(0.9, 0.95))

    def scheduler(wrapped: torch.optim.Optimizer):  # built on DeepSpeed's wrapper of the optimizer
        return get_scheduler(args.lr_scheduler_type, wrapped, num_warmup_steps=args.num_warmup_steps,
                             num_training_steps=total_steps)

    engine, *_ = deepspeed.initialize(model=module, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
    return engine


def optimizer_steps(loader: DataLoader, args: argparse.Namespace) -> int:
    """DeepSpeed steps the optimizer on every gradient_accumulation_steps-th micro-batch, across epoch borders."""
    return max(1, len(loader) * args.num_train_epochs // args.gradient_accumulation_steps)


def _evaluate(engine: deepspeed.DeepSpeedEngine, evaluate: EvalFn, log: RunLog, step: int) -> dict[str, float]:
    engine.eval()
    with torch.no_grad():
        metrics = evaluate()
    engine.train()
    log.record("eval", step, metrics)
    log.info(f"eval @ step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return metrics


def train(engine: deepspeed.DeepSpeedEngine, loader: DataLoader, args: argparse.Namespace, loss_fn: LossFn,
          evaluate: EvalFn, log: RunLog) -> dict[str, float]:
    """Evaluate, train for --num_train_epochs with periodic evals, and return the final evaluation."""
    total = optimizer_steps(loader, args)
    _evaluate(engine, evaluate, log, step=0)
    bar = tqdm(total=total, desc="train", disable=not dist.is_main(), dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 30)  # logs get a line every 30 s, not every step
    window: dict[str, list[float]] = {}
    started = time.perf_counter()
    for epoch in range(args.num_train_epochs):
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            batch = {k: v.to(engine.device) for k, v in batch.items()}
            loss, stats = loss_fn(engine, batch)
            engine.backward(loss)
            before = engine.global_steps
            engine.step()
            for key, value in {"loss": loss.item(), **stats}.items():
                window.setdefault(key, []).append(value)
            if engine.global_steps == before:
                continue  # still accumulating gradients
            step = engine.global_steps
            metrics = dist.mean_across_ranks({k: sum(v) / len(v) for k, v in window.items()})
            metrics.update(lr=engine.get_lr()[0], epoch=epoch, elapsed_s=time.perf_counter() - started)
            window.clear()
            log.record("train", step, metrics)
            if args.print_loss:
                log.info(f"epoch {epoch} step {step}: loss {metrics['loss']:.4f}")
            bar.update(1)
            shown = {"loss": f"{metrics['loss']:.4f}"} | {k: f"{v:.3f}" for k, v in stats.items()}
            bar.set_postfix(shown, refresh=False)
            if args.eval_interval and step % args.eval_interval == 0 and step < total:
                _evaluate(engine, evaluate, log, step)
    bar.close()
    return _evaluate(engine, evaluate, log, step=engine.global_steps)
