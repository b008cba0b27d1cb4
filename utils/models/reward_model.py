"""Where a reward model reads its score, per-token rewards from any *ForSequenceClassification model, and loading a
trained one to score with."""
from __future__ import annotations

import sys
import warnings

import torch
from torch import nn
from tqdm import tqdm
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from utils import distributed as dist
from utils.errors import UserError
from utils.models.dschat_convert import convert, is_dschat_checkpoint
from utils.models.loading import additive_mask

NORMALIZATION_KEY = "reward_normalization"  # in config.json: the constants rw_eval.py --write_normalization fits


def score_positions(input_ids: torch.Tensor, attention_mask: torch.Tensor, score_token: str, pad_id: int,
                    num_padding_at_beginning: int) -> torch.Tensor:
    """The index of the scored token in each row: the one score rule (docs/reward-scores.md).

    end: the last attended token, for left or right padding.
    first_pad: DeepSpeed-Chat's rule: skip the first `num_padding_at_beginning` pad ids, score just before the next
    one; a row without one is scored at its last position.
    """
    width = input_ids.size(1)
    positions = torch.arange(width, device=input_ids.device).expand_as(input_ids)
    if score_token == "end":
        return (positions * attention_mask.long()).argmax(dim=1)
    if score_token != "first_pad":
        raise ValueError(f"unknown score_token {score_token!r}")
    is_pad = input_ids == pad_id
    occurrence = is_pad.long().cumsum(dim=1)  # 1 at the first pad id, 2 at the second, ...
    target = is_pad & (occurrence == num_padding_at_beginning + 1)
    found = target.any(dim=1)
    first = torch.where(target, positions, width).min(dim=1).values
    return torch.where(found, first - 1, torch.full_like(first, width - 1))


class RewardModel(nn.Module):
    """Applies the model's `score` head to every position, so the losses can read any token's reward.

    The wrapped Hugging Face model is what gets exported; its own pooling (rightmost non-pad token) then picks
    the same position as `score_positions`, which keeps pipeline scores equal to training scores.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """A (rows, width) padding mask, or a (rows, 1, width, width) boolean mask with position ids (shared-prompt
        rows)."""
        backbone = getattr(self.model, self.model.base_model_prefix)
        if attention_mask.dim() == 4:
            attention_mask = additive_mask(attention_mask, backbone.get_input_embeddings().weight.dtype)
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=False).last_hidden_state
        return self.model.score(hidden).squeeze(-1)


def checked_reward_config(model_dir: str) -> PretrainedConfig:
    """Refuse what is not a one-label reward model before loading weights: scoring with a random head is the
    failure DeepSpeed-Chat's users met without any message."""
    try:
        config = AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load a reward model from '{model_dir}': {err}") from None
    architectures = config.architectures or []
    if architectures and not any("SequenceClassification" in a for a in architectures):
        raise UserError(f"'{model_dir}' is a {', '.join(architectures)}, not a reward model: it has no score head. "
                        "Train one with step 2, or give a *ForSequenceClassification directory")
    if config.num_labels != 1:
        raise UserError(f"'{model_dir}' has {config.num_labels} labels; a reward model has one (num_labels=1)")
    return config


def load_trained_reward_model(model_dir: str, dtype: torch.dtype = torch.float32, tokenizer: str | None = None
                              ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, bool]:
    """The model in eval mode, its tokenizer, and whether it was a DeepSpeed-Chat step-2 folder, converted in memory
    (its tokenizer from `tokenizer` where the folder names none). A model without a trained head is refused."""
    if is_dschat_checkpoint(model_dir):
        model, loaded = convert(model_dir, tokenizer)
        return model.to(dtype).eval(), loaded, True
    checked_reward_config(model_dir)
    loaded = AutoTokenizer.from_pretrained(model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, info = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=dtype,
                                                                         output_loading_info=True)
    head = [k for k in info["missing_keys"] if k.split(".")[0] in ("score", "classifier", "v_head")]
    if head:
        raise UserError(f"'{model_dir}' has no trained score head (missing {', '.join(sorted(head))}): its "
                        "scores would be random")
    return model.eval(), loaded, False


def score_texts(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], batch_size: int
                ) -> tuple[list[float], list[int]]:
    """Each text's score, as pipeline() gives it, and its token count: the one scorer of rw_eval.py and step 3's
    rollouts."""
    ids = tokenizer(texts)["input_ids"]
    return score_sequences(model, ids, batch_size), [len(seq) for seq in ids]


@torch.no_grad()
def score_sequences(model: PreTrainedModel, sequences: list[list[int]], batch_size: int) -> list[float]:
    """Each token-id sequence's score through the model's own pooling, as pipeline() scores its text. Sequences are
    batched by length and right-padded with config.pad_token_id, so padding stays rare and positions start at 0; a
    model without a pad id scores one at a time, as its pooling needs one to find the end."""
    pad = dist.model_config(model).pad_token_id
    if pad is None:
        batch_size = 1
    device = dist.input_device(model)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    scores = [0.0] * len(sequences)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    # under ZeRO-3, keep step with the processes that have more texts, with spare forwards whose scores are dropped
    spare = dist.max_across_ranks(len(batches)) - len(batches) if dist.gathers_layers(model) else 0
    for batch in tqdm(batches, desc="scoring", disable=not sys.stderr.isatty() or len(batches) < 2):
        width = max(len(sequences[i]) for i in batch)
        ids = torch.full((len(batch), width), pad or 0, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(batch):
            ids[row, :len(sequences[i])] = torch.tensor(sequences[i], dtype=torch.long)
            mask[row, :len(sequences[i])] = 1
        for i, value in zip(batch, model(input_ids=ids.to(device), attention_mask=mask.to(device)
                                         ).logits[:, 0].float().tolist()):
            scores[i] = value
    for _ in range(spare):
        model(input_ids=torch.full((1, 1), pad or 0, device=device))
    return scores
