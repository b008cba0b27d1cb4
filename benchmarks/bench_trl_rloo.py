"""trl.RLOOTrainer on the benchmark's prompts, set up to train as our `--algo rloo` does, for a like-for-like CPU
comparison.

TRL's own defaults would not run or would not compare: bf16 (fails on CPU), its learning-rate decay and AdamW's
beta2 of 0.999 (ours are constant and 0.95), no reward clipping (ours clips to +-5). The settings are recorded in the
result. The reward is the same function for both trainers: the reward model scores each prompt and answer as
pipeline() scores that text, one sequence per text (given to TRL as a reward function; TRL's own path for a model
would tokenize the texts without the BOS and EOS the reward model reads). Its time is split by wrapping three of its
methods: generation, the reward, the no-gradient log-prob passes (its pre-update policy and its reference), and the
rest (the training pass and the optimizer).
"""
from __future__ import annotations

import time
from typing import Any, Callable

import torch
from bench_trl import LoopClock
from datasets import Dataset
from transformers import Trainer
from trl import RLOOConfig, RLOOTrainer

from utils.data.formatting import format_text
from utils.models.reward_model import load_trained_reward_model, score_texts


def settings(spec: dict[str, Any]) -> dict[str, Any]:
    """The RLOOConfig arguments, every one that matters for speed or for the objective named explicitly."""
    k = spec["k"]
    return dict(output_dir=spec["output_dir"], per_device_train_batch_size=spec["prompts_per_step"] * k,
                num_generations=k, max_completion_length=spec["max_new_tokens"], max_steps=spec["steps"],
                learning_rate=spec["learning_rate"], lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                adam_beta2=0.95, max_grad_norm=1.0, beta=spec["kl_ctl"], num_iterations=1, temperature=1.0,
                top_p=1.0, top_k=0, reward_clip_range=(-spec["clip_reward_value"], spec["clip_reward_value"]),
                normalize_advantages=False, use_vllm=False, gradient_checkpointing=False, bf16=False, fp16=False,
                disable_dropout=True, eval_strategy="no", save_strategy="no", report_to=[], logging_steps=1,
                dataloader_num_workers=0, seed=spec["seed"])


def pipeline_reward(reward_dir: str, template: str) -> Callable[..., list[float]]:
    """A TRL reward function: the reward model's score of each raw prompt and answer written with `template`,
    exactly as our rollout scores them, one sequence per text."""
    model, tokenizer, _ = load_trained_reward_model(reward_dir)

    def reward(prompts: list[str], completions: list[str], raw_prompt: list[str], **kwargs) -> list[float]:
        texts = [format_text(raw, answer, template, tokenizer) for raw, answer in zip(raw_prompt, completions)]
        return score_texts(model, tokenizer, texts, 32)[0]

    return reward


class Split:
    """Seconds spent inside wrapped methods, by part."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {"generate": 0.0, "score": 0.0, "no_grad_log_probs": 0.0}
        self.generated_tokens = 0

    def wrap(self, trainer: Trainer, method: str, part: str | Callable[[], str | None],
             tokens: Callable[[Any], int] | None = None) -> None:
        """Time `method` under `part` (or the part that a callable names at the call's end; None: not counted),
        and add `tokens(its output)` to the generated tokens."""
        original = getattr(trainer, method)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            out = original(*args, **kwargs)
            name = part if isinstance(part, str) else part()
            if name is not None:
                self.seconds[name] += time.perf_counter() - started
            if tokens is not None:
                self.generated_tokens += tokens(out)
            return out

        setattr(trainer, method, timed)


def run_trl_rloo(spec: dict[str, Any]) -> dict[str, Any]:
    """Train, and return the loop time, its split, the generated tokens and the settings; the policy is saved to
    output_dir for the harness to evaluate."""
    config = RLOOConfig(**settings(spec))
    clock, split = LoopClock(), Split()
    rows = [{"prompt": text, "raw_prompt": raw} for text, raw in zip(spec["prompts"], spec["raw_prompts"])]
    trainer = RLOOTrainer(model=spec["actor_dir"], reward_funcs=pipeline_reward(spec["reward_dir"], spec["template"]),
                          args=config, train_dataset=Dataset.from_list(rows), callbacks=[clock])
    split.wrap(trainer, "_generate_single_turn", "generate", lambda ids: sum(map(len, ids)))
    split.wrap(trainer, "_calculate_rewards", "score")
    split.wrap(trainer, "_get_per_token_logps_and_entropies",
               lambda: None if torch.is_grad_enabled() else "no_grad_log_probs")
    trainer.train()
    trainer.save_model(spec["output_dir"])
    return {"train_s": clock.last - clock.start, "steps": clock.steps, "split_s": split.seconds,
            "generated_tokens": split.generated_tokens,
            "settings": settings(spec) | {"optim": str(config.optim), "device": str(config.device),
                                          "loss": "sequence-level clipped ratio, mean over sequences (TRL's RLOO)"}}
