"""trl.DPOTrainer on the benchmark's pairs, set up to train as our `--algo dpo` does, for a like-for-like CPU
comparison.

TRL's own defaults would not run or would not compare: bf16 (on by default; fails on CPU), gradient checkpointing (on
by default; ours is off), a learning rate of 1e-6 with linear decay (ours: 1e-5, constant), AdamW's beta2 of 0.999
(ours 0.95), max_length 1024 (ours 512; every pair fits whole, so neither trainer cuts any). The pairs come in our
trainer's batch order, read sequentially, so that both train on the same batches and their loss curves compare step
by step. The reference is TRL's own frozen copy of the starting model (ref_model=None), run on every batch, as ours.
"""
from __future__ import annotations

from typing import Any

from bench_counts import PadCounter, pair_key
from bench_trl import LoopClock
from datasets import Dataset
from transformers import TrainerCallback
from trl import DPOConfig, DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference


class LossLog(TrainerCallback):
    """The training loss TRL logs at every optimizer step (logging_steps=1: that step's loss, not a window's mean)."""

    def __init__(self) -> None:
        self.losses: dict[int, float] = {}

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        if logs and "loss" in logs:
            self.losses[state.global_step] = logs["loss"]


def settings(spec: dict[str, Any]) -> dict[str, Any]:
    """The DPOConfig arguments, every one that matters for speed or for the objective named explicitly."""
    return dict(output_dir=spec["output_dir"], per_device_train_batch_size=spec["batch_pairs"],
                max_steps=spec["steps"], num_train_epochs=1, learning_rate=spec["learning_rate"],
                lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, adam_beta2=0.95, max_grad_norm=1.0,
                beta=spec["beta"], loss_type=["sigmoid"], label_smoothing=0.0, max_length=spec["max_seq_len"],
                truncation_mode="keep_start", padding_free=False, pad_to_multiple_of=None,
                precompute_ref_log_probs=spec["precompute"], gradient_checkpointing=False, bf16=False, fp16=False,
                disable_dropout=True, train_sampling_strategy="sequential", eval_strategy="no", save_strategy="no",
                report_to=[], logging_steps=1, dataloader_num_workers=0, seed=spec["seed"])


def run_trl_dpo(spec: dict[str, Any]) -> dict[str, Any]:
    """Train, and return the loop time, the loss at every step, the pad counts of TRL's own collator, and each
    pair's token ids (as pair_key) and answer start, for the harness to check against ours."""
    config = DPOConfig(**settings(spec))
    clock, losses = LoopClock(), LossLog()
    counter = PadCounter(DataCollatorForPreference(pad_token_id=spec["pad_id"], max_length=spec["max_seq_len"]),
                         spec["pad_id"])
    trainer = DPOTrainer(model=spec["model_dir"], ref_model=None, args=config,
                         train_dataset=Dataset.from_list(spec["rows"]), data_collator=counter,
                         callbacks=[clock, losses])
    pairs = [(row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]) for row in trainer.train_dataset]
    trainer.train()
    return {"train_s": clock.last - clock.start, "steps": clock.steps, "losses": losses.losses,
            "pairs_after_filter": len(pairs), "collate_counts": counter.counts(),
            "pair_keys": [pair_key(p + c, p + r) for p, c, r in pairs], "answer_starts": [len(p) for p, _, _ in pairs],
            "settings": settings(spec) | {"optim": str(config.optim), "device": str(config.device),
                                          "adam_beta1": config.adam_beta1, "adam_epsilon": config.adam_epsilon}}
