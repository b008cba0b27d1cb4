"""trl.GRPOTrainer on the benchmark's problems, set up to train as our `--algo grpo` does, for a like-for-like CPU
comparison.

TRL's own defaults would not run or would not compare: bf16 (fails on CPU), gradient checkpointing (ours is off),
its learning-rate decay and AdamW's beta2 of 0.999 (the harness names one schedule for both; our beta2 is 0.95).
The GRPO settings that are already its defaults (beta 0, loss_type dapo, scale_rewards group, epsilon 0.2, one
iteration per rollout) are named anyway, so that a change of default cannot change the comparison; all are recorded
in the result. The rewards are our built-in functions, called as our trainer calls them. The time is split by wrapping
three of its methods: generation, the reward, the log-prob passes without gradient (none with beta 0 and one
iteration), and the rest (the training pass and the optimizer).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from bench_trl import LoopClock
from bench_trl_rloo import Split
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from utils.rewards.builtin import make


def settings(spec: dict[str, Any]) -> dict[str, Any]:
    """The GRPOConfig arguments, every one that matters for speed or for the objective named explicitly."""
    k = spec["k"]
    return dict(output_dir=spec["output_dir"], per_device_train_batch_size=spec["prompts_per_step"] * k,
                gradient_accumulation_steps=1, steps_per_generation=1, num_generations=k,
                max_completion_length=spec["max_new_tokens"], max_steps=spec["steps"],
                learning_rate=spec["learning_rate"], lr_scheduler_type=spec["lr_scheduler_type"],
                warmup_steps=spec["warmup_steps"], weight_decay=0.0, adam_beta2=0.95, max_grad_norm=1.0,
                beta=spec["beta"], num_iterations=1, epsilon=spec["epsilon"],
                epsilon_high=spec["epsilon"], loss_type=spec["loss_type"], scale_rewards=spec["scale_rewards"],
                mask_truncated_completions=False, temperature=spec["temperature"], top_p=1.0, top_k=0,
                use_vllm=False, gradient_checkpointing=False, bf16=False, fp16=False, disable_dropout=True,
                eval_strategy="no", save_strategy="no", report_to=[], logging_steps=1, log_completions=False,
                dataloader_num_workers=0, seed=spec["seed"])


def as_trl(name: str, function: Callable[..., list[float | None]]) -> Callable[..., list[float | None]]:
    """One of our reward functions as TRL calls reward functions, given what our trainer gives it: the decoded
    completions, the rows' `answer` column and each answer's token count, its EOS included (TRL's completion ids
    stop with the EOS, as ours do). Named as ours, so that TRL logs rewards/<name>/mean."""
    def reward(prompts: list[str], completions: list[str], completion_ids: list[list[int]], answer: list[str],
               **kwargs: Any) -> list[float | None]:
        return function(prompts, completions, answer=answer, answer_lengths=[len(ids) for ids in completion_ids])

    reward.__name__ = name
    return reward


def reward_functions(spec: dict[str, Any]) -> list[Callable[..., list[float | None]]]:
    """The spec's built-in rewards, each built as our trainer builds it from its flags."""
    return [as_trl(name, make(name, format_regex=None, max_answer_seq_len=spec["max_new_tokens"],
                              overlong_buffer=spec["overlong_buffer"])) for name in spec["reward_funcs"]]


def build_trainer(spec: dict[str, Any], callbacks: list[Any]) -> GRPOTrainer:
    rows = [{"prompt": text, "answer": answer} for text, answer in zip(spec["prompts"], spec["answers"])]
    return GRPOTrainer(model=spec["actor_dir"], reward_funcs=reward_functions(spec), args=GRPOConfig(**settings(spec)),
                       train_dataset=Dataset.from_list(rows), callbacks=callbacks)


def prompt_ids(trainer: GRPOTrainer, prompts: list[str]) -> list[list[int]]:
    """TRL's token ids of the prompts, by the method its generation tokenizes them with."""
    return trainer._tokenize_prompts(prompts)[0]


def run_trl_grpo(spec: dict[str, Any]) -> dict[str, Any]:
    """Train, and return the loop time, its split, the generated tokens, TRL's own token ids of the prompts, the ids
    its generation stops at and the settings; the policy is saved to output_dir for the harness to evaluate."""
    clock, split = LoopClock(), Split()
    trainer = build_trainer(spec, [clock])
    ids = prompt_ids(trainer, spec["prompts"])
    split.wrap(trainer, "_generate_single_turn", "generate", lambda out: sum(map(len, out[0])))
    split.wrap(trainer, "_calculate_rewards", "score")
    split.wrap(trainer, "_get_per_token_logps_and_entropies",
               lambda: None if torch.is_grad_enabled() else "no_grad_log_probs")
    trainer.train()
    trainer.save_model(spec["output_dir"])
    rewards = [log["rewards/math_answer/mean"] for log in trainer.state.log_history
               if "rewards/math_answer/mean" in log]
    return {"train_s": clock.last - clock.start, "steps": clock.steps, "split_s": split.seconds,
            "generated_tokens": split.generated_tokens, "prompt_ids": ids, "eos_token_ids": trainer.eos_token_ids,
            "train_rewards": rewards,
            "settings": settings(spec) | {"optim": str(trainer.args.optim), "device": str(trainer.args.device),
                                          "reward_funcs": [f"utils.rewards.builtin.{name}"
                                                           for name in spec["reward_funcs"]]}}
