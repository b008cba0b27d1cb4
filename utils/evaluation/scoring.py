"""Scoring texts with any Hugging Face reward-model directory, batched with padding only to each batch's longest."""
from __future__ import annotations

import time

import torch
from transformers import pipeline

from utils.errors import UserError
from utils.models.reward_model import load_trained_reward_model, score_sequences, score_texts
from utils.models.shared_prompt import can_share_rows, shared_length, shared_row_scores

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class RewardScorer:
    def __init__(self, model_dir: str, dtype: str = "fp32", device: str = "cpu", tokenizer: str | None = None) -> None:
        """Any reward-model directory; a DeepSpeed-Chat step-2 output is converted in memory first, with `tokenizer`
        where its folder names none."""
        self.model_dir, self.device = model_dir, device
        model, self.tokenizer, self.converted = load_trained_reward_model(model_dir, DTYPES[dtype], tokenizer)
        self.config = model.config
        if self.converted:
            print(f"{model_dir} is a DeepSpeed-Chat step-2 checkpoint: converted it in memory (python -m "
                  f"utils.models.dschat_convert {model_dir} OUT_DIR saves the conversion)", flush=True)
            self._pipeline_model = dict(model=model, tokenizer=self.tokenizer)
        else:
            self._pipeline_model = dict(model=model_dir)  # loaded afresh from the directory, as users will
        self.model = model.to(device).eval()

    def score(self, texts: list[str], batch_size: int) -> tuple[list[float], list[int]]:
        """Each text's score and token count."""
        return score_texts(self.model, self.tokenizer, texts, batch_size)

    def score_answer_sets(self, sets: list[list[list[int]]], batch_size: int, shared: bool = True
                          ) -> tuple[list[list[float]], str]:
        """The scores of each set of token-id sequences (an item's answers, each with its prompt), and how they were
        batched: with `shared`, one row per set that computes its common start once, wherever that is exact; else
        each sequence on its own. Either way batched by length."""
        if shared and can_share_rows(self.model, [seq for group in sets for seq in group]):
            order = sorted(range(len(sets)), key=lambda i: sum(map(len, sets[i]))
                           - (len(sets[i]) - 1) * shared_length(*sets[i]))
            out: list[list[float]] = [[] for _ in sets]
            for i, scores in zip(order, shared_row_scores(self.model, [sets[i] for i in order], batch_size)):
                out[i] = scores
            return out, "one row per item, its prompt computed once"
        flat = score_sequences(self.model, [seq for group in sets for seq in group], batch_size)
        out, start = [], 0
        for group in sets:
            out.append(flat[start:start + len(group)])
            start += len(group)
        return out, "each answer a sequence of its own"

    def pipeline_scores(self, texts: list[str]) -> tuple[list[float], float]:
        """Each text's score from transformers.pipeline, one text at a time, as downstream users score; and the
        seconds that took (the pipeline built beforehand)."""
        scorer = pipeline("text-classification", **self._pipeline_model, function_to_apply="none", device=self.device)
        start = time.perf_counter()
        scores = [scorer(text)[0]["score"] for text in texts]
        return scores, time.perf_counter() - start

    def check_pipeline(self, texts: list[str], scores: list[float], tolerance: float = 1e-4) -> float:
        """Re-score through transformers.pipeline, as downstream users will; any difference over tolerance is an
        error. Returns the largest difference."""
        again, _ = self.pipeline_scores(texts)
        worst = max(abs(a - b) for a, b in zip(again, scores))
        if worst > tolerance:
            raise UserError(f"--check_pipeline: pipeline() scores differ from rw_eval's by up to {worst:.3g} "
                            f"(over {tolerance:g}); the tokenizer or config.pad_token_id saved in "
                            f"'{self.model_dir}' do not reproduce the scoring")
        return worst
