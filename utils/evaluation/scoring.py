"""Scoring texts with any Hugging Face reward-model directory, batched with padding only to each batch's longest."""
from __future__ import annotations

import sys

import torch
from tqdm import tqdm
from transformers import pipeline

from utils.errors import UserError
from utils.models.reward_model import load_trained_reward_model

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

    @torch.no_grad()
    def score(self, texts: list[str], batch_size: int) -> tuple[list[float], list[int]]:
        """Each text's score and token count. Texts are batched by length, so padding stays rare; a tokenizer
        without a pad token scores one text at a time, as the model's pooling needs a pad id to find the end."""
        if self.tokenizer.pad_token is None:
            batch_size = 1
        lengths = [len(ids) for ids in self.tokenizer(texts)["input_ids"]]
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        scores = [0.0] * len(texts)
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        for batch in tqdm(batches, desc="scoring", disable=not sys.stderr.isatty() or len(batches) < 2):
            enc = self.tokenizer([texts[i] for i in batch], padding=True, return_tensors="pt").to(self.device)
            for i, value in zip(batch, self.model(**enc).logits[:, 0].float().tolist()):
                scores[i] = value
        return scores, lengths

    def check_pipeline(self, texts: list[str], scores: list[float], tolerance: float = 1e-4) -> float:
        """Re-score through transformers.pipeline, as downstream users will; any difference over tolerance is an
        error. Returns the largest difference."""
        scorer = pipeline("text-classification", **self._pipeline_model, function_to_apply="none", device=self.device)
        again = [out["score"] for out in scorer(texts, batch_size=1)]
        worst = max(abs(a - b) for a, b in zip(again, scores))
        if worst > tolerance:
            raise UserError(f"--check_pipeline: pipeline() scores differ from rw_eval's by up to {worst:.3g} "
                            f"(over {tolerance:g}); the tokenizer or config.pad_token_id saved in "
                            f"'{self.model_dir}' do not reproduce the scoring")
        return worst
