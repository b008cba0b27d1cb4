"""trl.RewardTrainer on the benchmark's pairs, set up for a like-for-like CPU comparison.

TRL's own defaults would not run or would not compare: bf16 is on by default (fails on CPU), gradient checkpointing
is on (about 1.4x slower here), and pairs over max_length are dropped. The settings below are recorded in the result.
"""
from __future__ import annotations

import time
from typing import Any

from bench_counts import PadCounter
from datasets import Dataset
from transformers import TrainerCallback
from trl import RewardConfig, RewardTrainer
from trl.trainer.reward_trainer import DataCollatorForPreference


class LoopClock(TrainerCallback):
    """Seconds from the start of the training loop to the end of its last optimizer step: setup, tokenization and
    the final save are left out, as our trainer's elapsed_s leaves them out."""

    def __init__(self) -> None:
        self.start = self.last = 0.0
        self.steps = 0

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs) -> None:
        self.last, self.steps = time.perf_counter(), state.global_step


def settings(spec: dict[str, Any]) -> dict[str, Any]:
    """The RewardConfig arguments, every one that matters for speed named explicitly."""
    grouped = spec["group_by_length"]
    return dict(output_dir=spec["output_dir"], per_device_train_batch_size=spec["batch_pairs"],
                max_steps=spec["steps"], num_train_epochs=1, learning_rate=spec["learning_rate"],
                max_length=spec["max_seq_len"], gradient_checkpointing=False, bf16=False, fp16=False,
                train_sampling_strategy="group_by_length" if grouped else "random",
                remove_unused_columns=not grouped,  # the sampler reads the precomputed `length` column
                eval_strategy="no", save_strategy="no", report_to=[], logging_steps=10,
                dataloader_num_workers=0, seed=spec["seed"], disable_dropout=True)


def run_trl(spec: dict[str, Any]) -> dict[str, Any]:
    """Train, and return the loop time, the pad counts of TRL's own collator, and TRL's token ids for checking."""
    config = RewardConfig(**settings(spec))
    clock = LoopClock()
    counter = PadCounter(DataCollatorForPreference(pad_token_id=spec["pad_id"]), spec["pad_id"])
    trainer = RewardTrainer(model=spec["model_dir"], args=config, train_dataset=Dataset.from_list(spec["rows"]),
                            data_collator=counter, callbacks=[clock])
    ids = [[row["chosen_ids"], row["rejected_ids"]] for row in trainer.train_dataset]
    trainer.train()
    return {"train_s": clock.last - clock.start, "steps": clock.steps, "pairs_after_filter": len(ids),
            "token_ids": ids, "collate_counts": counter.counts(),
            "settings": settings(spec) | {"optim": str(config.optim), "device": str(config.device),
                                          "lr_scheduler_type": str(config.lr_scheduler_type),
                                          "max_grad_norm": config.max_grad_norm}}
