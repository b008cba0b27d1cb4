"""Every sampled answer's reward, from whichever sources a run gives: the reward model's score, checkable reward
functions, and a remote reward server, each with its weight. A reward model alone gives its raw score, which
--reward_normalization and --clip_reward_value then shape; with functions or a server the reward is their weighted
sum."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from utils import distributed as dist
from utils.data.formatting import format_prompt, format_text
from utils.data.sources import Row
from utils.objectives.rollout import Rollout, reward_scores
from utils.rewards.combined import RewardFunctions
from utils.rewards.remote import RemoteReward, RewardServerError
from utils.rewards.settings import remote_weight, reward_model_weight

PerFunction = dict[str, list[float | None]]


@dataclass
class AnswerRewards:
    args: argparse.Namespace
    tokenizer: PreTrainedTokenizerBase  # the policy's: it writes the texts a reward server gets
    reward_model: PreTrainedModel | None = None
    reward_tokenizer: PreTrainedTokenizerBase | None = None
    functions: RewardFunctions | None = None
    remote: RemoteReward | None = None

    @classmethod
    def from_flags(cls, args: argparse.Namespace, tokenizer: PreTrainedTokenizerBase, prompts: list[Row],
                   reward_model: PreTrainedModel | None, reward_tokenizer: PreTrainedTokenizerBase | None
                   ) -> AnswerRewards:
        """The run's reward sources. The functions are imported and tried on two of the prompts with an empty answer
        now, before any step: a function that fails, or returns the wrong count, a non-number or NaN, stops the run
        with one line naming it."""
        functions = RewardFunctions.from_flags(args) if args.reward_funcs else None
        if functions is not None:
            columns = {name for row in prompts for name in row if name != "prompt"}
            functions.check_columns(columns)
            probe = prompts[:2]
            functions.score([r["prompt"] for r in probe], [""] * len(probe), _columns(probe, columns),
                            [0] * len(probe))
        remote = RemoteReward(args.reward_url, args.reward_timeout, args.reward_retries) if args.reward_url else None
        return cls(args, tokenizer, reward_model, reward_tokenizer, functions, remote)

    @property
    def alone(self) -> bool:
        """A reward model and nothing else: its raw scores, shaped afterwards as rewards always were."""
        return self.functions is None and self.remote is None

    def __call__(self, rows: list[Row], rollout: Rollout, k: int) -> tuple[torch.Tensor, PerFunction]:
        """(answers,) rewards, prompt-major as the rollout's rows, and each function's values by name."""
        args = self.args
        model_scores = None if self.reward_model is None else reward_scores(
            self.reward_model, self.reward_tokenizer, rows, rollout, k, args.template, shared=not args.no_shared_prompt)
        if self.alone:
            return model_scores, {}
        answered = [rows[i // k] for i in range(len(rollout.answers))]
        total = torch.zeros(len(rollout.answers))
        if model_scores is not None:
            total += reward_model_weight(args) * model_scores.float().cpu()
        per_function: PerFunction = {}
        if self.functions is not None:
            columns = {name for row in rows for name in row if name != "prompt"}
            values, per_function = self.functions.score([r["prompt"] for r in answered], rollout.answers,
                                                        _columns(answered, columns), rollout.lengths.tolist())
            total += torch.tensor(values)
        if self.remote is not None:
            total += remote_weight(args) * torch.tensor(self._remote(answered, rollout.answers))
        return total, per_function

    def _remote(self, rows: list[Row], answers: list[str]) -> list[float]:
        """The server's rewards for prompt + answer texts written as the policy reads them, with each row's `label`
        (or `answer`) column as the label. Every process learns whether any failed, so that all stop together."""
        queries = [format_text(r["prompt"], answer, self.args.template, self.tokenizer)
                   for r, answer in zip(rows, answers)]
        prompts = [format_prompt(r["prompt"], self.args.template, self.tokenizer) for r in rows]
        key = next((name for name in ("label", "answer") if name in rows[0]), None)
        failure: RewardServerError | None = None
        try:
            rewards = self.remote(queries, prompts, None if key is None else [r[key] for r in rows])
        except RewardServerError as err:
            failure, rewards = err, []
        if dist.sum_across_ranks(torch.tensor(float(failure is not None), device=dist.device())).item():
            raise failure or RewardServerError(f"reward server {self.args.reward_url}: another process's request "
                                               "failed (its log names the cause)")
        return rewards


def _columns(rows: list[Row], names: set[str]) -> dict[str, list]:
    return {name: [row.get(name) for row in rows] for name in sorted(names)}

