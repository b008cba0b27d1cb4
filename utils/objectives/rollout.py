"""K sampled answers per prompt from the policy, scored by the reward model: the experience every step-3 algorithm
learns from.

Sampling is pure (temperature only: no top-k, top-p, minimum length or repetition penalty), so that the log-ratio to
the reference estimates a true KL. Answers end at the first EOS, which stays in the answer as an action the policy
learns; padding uses a dedicated pad id, never the EOS. Log-probabilities are recomputed by a forward pass with the
masks and positions training uses, so that the generator only supplies token ids.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from deepspeed.runtime.zero.stage3 import unwrap_model_for_generation
from torch import nn
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from utils import distributed as dist
from utils.data.formatting import format_text
from utils.data.sources import Row
from utils.models.loading import additive_mask
from utils.models.reward_model import score_texts
from utils.models.shared_prompt import can_share_rows, shared_row_scores, shared_rows


@dataclass
class Rollout:
    """Prompt-major rows: prompt i's K samples are rows i*K to i*K+K-1. Shapes (rows, width) unless noted."""

    input_ids: torch.Tensor  # left-padded prompt, then the answer, then pads
    attention_mask: torch.Tensor  # 1 on prompt tokens and on the answer up to and with its EOS
    answer_mask: torch.Tensor  # 1 on the answer's tokens up to and with its EOS: the actions
    prompt_width: int  # where answers start
    truncated: torch.Tensor  # (rows,) bool: no EOS within --max_answer_seq_len
    empty: torch.Tensor  # (rows,) bool: the EOS came first
    answers: list[str]  # decoded, without the EOS
    _shared: dict[int, SharedRows] = field(default_factory=dict, repr=False, compare=False)

    def shared(self, k: int) -> SharedRows:
        """The rollout as one row per prompt of k answers, built once for all the passes over it."""
        if k not in self._shared:
            self._shared[k] = SharedRows.of(self, k)
        return self._shared[k]

    def rows(self, start: int, end: int) -> Rollout:
        """Rows start to end-1: one process's share of a rollout sampled whole."""
        return Rollout(self.input_ids[start:end], self.attention_mask[start:end], self.answer_mask[start:end],
                       self.prompt_width, self.truncated[start:end], self.empty[start:end], self.answers[start:end])

    @property
    def position_ids(self) -> torch.Tensor:
        return (self.attention_mask.cumsum(dim=1) - 1).clamp(min=0)

    @property
    def lengths(self) -> torch.Tensor:
        return self.answer_mask.sum(dim=1)

    @property
    def ended(self) -> torch.Tensor:
        """(rows,) bool: the answer ends with the EOS."""
        return ~self.truncated


def encode_prompts(prompts: list[str], tokenizer: PreTrainedTokenizerBase, max_prompt_len: int
                   ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Left-padded prompt ids and mask, as generate wants them; a prompt over max_prompt_len keeps its last tokens
    after its leading special tokens (its BOS), as the data pipeline truncates. Returns how many were cut."""
    rows, cut = [], 0
    special = set(tokenizer.all_special_ids)
    for text in prompts:
        ids = tokenizer(text)["input_ids"]
        if len(ids) > max_prompt_len:
            lead = next((i for i, t in enumerate(ids) if t not in special), 0)
            ids = ids[:lead] + ids[len(ids) - (max_prompt_len - lead):]
            cut += 1
        rows.append(ids)
    width = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, ids in enumerate(rows):
        input_ids[i, width - len(ids):] = torch.tensor(ids)
        mask[i, width - len(ids):] = 1
    return input_ids, mask, cut


def sampling_config(tokenizer: PreTrainedTokenizerBase, max_answer_len: int, temperature: float,
                    greedy: bool = False, top_k: int = 0, top_p: float = 1.0) -> GenerationConfig:
    """Sampling at `temperature` (pure unless RAFT asks for top-k or top-p), or greedy; stopping at the EOS and
    padding with the dedicated pad."""
    sampling = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=temperature, top_k=top_k,
                                                          top_p=top_p)
    return GenerationConfig(max_new_tokens=max_answer_len, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, **sampling)


def zero3_generation(model: nn.Module, mode: str) -> tuple[object, nn.Module, bool]:
    """How to generate with a model (or its DeepSpeed engine) whose weights ZeRO-3 partitions: "gather" collects
    them once for the rollout and generates locally, with ZeRO's per-layer hooks off; "partitioned" gathers layer by
    layer at every token, and keeps every process stepping until all have finished (synced), so that none waits
    forever on a gather. Returns (context, the module to generate with, synced)."""
    module = getattr(model, "module", model)
    if not dist.gathers_layers(model):
        return nullcontext(), module, False
    if mode == "gather":
        return unwrap_model_for_generation(model), module, False
    return nullcontext(), module, True


def prefilled_prompts(module: nn.Module, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, k: int
                      ) -> dict[str, object]:
    """The keys and values of each prompt but its last token, computed once and repeated for its K samples, as
    generate's past_key_values: generate then computes only the last prompt token K times. Positions are those
    generate gives a left-padded prompt."""
    positions = (prompt_mask.cumsum(dim=1) - 1).masked_fill(prompt_mask == 0, 1)
    cache = module(input_ids=prompt_ids[:, :-1], attention_mask=prompt_mask[:, :-1],
                   position_ids=positions[:, :-1], use_cache=True).past_key_values
    cache.batch_repeat_interleave(k)
    return {"past_key_values": cache}


@torch.no_grad()
def sample(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt_ids: torch.Tensor,
           prompt_mask: torch.Tensor, k: int, config: GenerationConfig, seed: int, zero3: str = "gather",
           prefill_once: bool = True) -> Rollout:
    """K answers per prompt, seeded without touching the global random state (dropout masks, the data order); `model`
    may be a DeepSpeed engine, which ZeRO-3 generation needs (--zero3_generation). With `prefill_once`, each prompt
    is computed once for its K samples, not K times."""
    was_training = model.training
    model.eval()
    weights, module, synced = zero3_generation(model, zero3)
    with torch.random.fork_rng(devices=[]), weights:
        torch.manual_seed(seed)
        once = prefill_once and k > 1 and prompt_ids.size(1) > 1
        shared = prefilled_prompts(module, prompt_ids, prompt_mask, k) if once else {}
        out = module.generate(input_ids=prompt_ids.repeat_interleave(k, dim=0),
                             attention_mask=prompt_mask.repeat_interleave(k, dim=0), generation_config=config,
                             synced_gpus=synced, **shared)
    model.train(was_training)
    width = prompt_ids.size(1)
    answer = out[:, width:]
    is_eos = answer == tokenizer.eos_token_id
    has_eos = is_eos.any(dim=1)
    first_eos = torch.where(has_eos, is_eos.long().argmax(dim=1), answer.size(1))
    steps = torch.arange(answer.size(1)).expand_as(answer)
    answer_mask = (steps <= first_eos[:, None]) & (steps < answer.size(1))
    input_ids = out.clone()
    input_ids[:, width:][~answer_mask] = tokenizer.pad_token_id
    attention_mask = torch.cat([prompt_mask.repeat_interleave(k, dim=0), answer_mask.long()], dim=1)
    answers = [tokenizer.decode(row[:end], skip_special_tokens=True) for row, end in zip(answer, first_eos.tolist())]
    full_mask = torch.zeros_like(input_ids)
    full_mask[:, width:] = answer_mask.long()
    return Rollout(input_ids=input_ids, attention_mask=attention_mask, answer_mask=full_mask, prompt_width=width,
                   truncated=~has_eos, empty=has_eos & (first_eos == 0), answers=answers)


def token_log_probs(model: nn.Module, rollout: Rollout, temperature: float, k: int = 1
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token's log-probability under `model` at `temperature`, given the tokens before it, and the entropy of
    each position's distribution: (rows, width - 1) each, aligned with the tokens from position 1 on, on the
    rollout's device (the model may sit elsewhere: an offloaded reference). With k > 1, each prompt's K answers go
    in one row that computes the prompt once (the answers' values are the same; the prompt's are 0)."""
    device = dist.input_device(model)
    if k > 1:
        rows = rollout.shared(k)
        ids, positions, mask = (t.to(device) for t in rows.tensors)
        logits = model(input_ids=ids, attention_mask=additive_mask(mask, next(model.parameters()).dtype),
                       position_ids=positions).logits
        taken, entropy = _taken_and_entropy(rows.by_answer(logits).float() / temperature,
                                            rollout.input_ids[:, rollout.prompt_width:].to(device))
        return rows.spread(taken, rollout), rows.spread(entropy, rollout)
    ids = rollout.input_ids.to(device)
    logits = model(input_ids=ids, attention_mask=rollout.attention_mask.to(device),
                   position_ids=rollout.position_ids.to(device)).logits[:, :-1].float() / temperature
    return tuple(t.to(rollout.input_ids.device) for t in _taken_and_entropy(logits, ids[:, 1:]))


def _taken_and_entropy(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    log_probs = F.log_softmax(logits, dim=-1)
    taken = log_probs.gather(2, tokens[..., None]).squeeze(2)
    return taken, -(log_probs.exp() * log_probs).sum(dim=-1)


@dataclass
class SharedRows:
    """A rollout as one row per prompt, `[prompt, answer_1, ..., answer_K]`, and where in those rows each answer
    token's prediction (or state value) sits: answer i's first token is predicted at the prompt's last token, each
    later one at the answer token before it."""

    tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # input ids, position ids, boolean 4-D mask
    sources: torch.Tensor  # (rollout rows, answer width): the shared row's position for each answer token
    k: int

    @classmethod
    def of(cls, rollout: Rollout, k: int) -> SharedRows:
        width, rows = rollout.prompt_width, rollout.input_ids.size(0)
        prompt_mask, answer_mask = rollout.attention_mask[:, :width].bool(), rollout.answer_mask[:, width:].bool()
        answers = rollout.input_ids[:, width:]
        packed, sources = [], torch.zeros_like(answers)
        for first in range(0, rows, k):
            prompt = rollout.input_ids[first, :width][prompt_mask[first]].tolist()
            rests = [answers[first + i][answer_mask[first + i]].tolist() for i in range(k)]
            start = len(prompt)
            for i, rest in enumerate(rests):
                sources[first + i, :len(rest)] = torch.arange(start - 1, start + len(rest) - 1)
                sources[first + i, 0] = len(prompt) - 1
                start += len(rest)
            packed.append((prompt, rests))
        return cls(shared_rows(packed, pad_id=0), sources, k)

    def by_answer(self, per_position: torch.Tensor) -> torch.Tensor:
        """(prompts, row width, ...) outputs of the shared rows as (rollout rows, answer width, ...)."""
        rows = torch.arange(self.sources.size(0), device=per_position.device)[:, None] // self.k
        return per_position[rows, self.sources.to(per_position.device)]

    def spread(self, values: torch.Tensor, rollout: Rollout) -> torch.Tensor:
        """(rollout rows, answer width) values at the rollout's action columns, (rows, width - 1), 0 elsewhere."""
        width = rollout.prompt_width
        values = values.to(rollout.input_ids.device) * rollout.answer_mask[:, width:]
        out = torch.zeros(values.size(0), rollout.input_ids.size(1) - 1, dtype=values.dtype, device=values.device)
        return out.index_copy(1, torch.arange(width - 1, out.size(1), device=out.device), values)


def actions(rollout: Rollout) -> torch.Tensor:
    """The answer mask aligned with token_log_probs: 1 where a log-probability is an action's."""
    return rollout.answer_mask[:, 1:].float()


def reward_scores(reward_model: PreTrainedModel, reward_tokenizer: PreTrainedTokenizerBase, prompts: list[Row],
                  rollout: Rollout, k: int, template: str, batch_size: int = 32, shared: bool = True) -> torch.Tensor:
    """(rows,) scores of prompt + answer, each exactly as pipeline() scores that text: the answer's text is written
    with the reward model's template and encoded by its own tokenizer, which appends what its training appended.
    With `shared`, each prompt's K texts are scored in one row that computes their common start once."""
    texts = [format_text(prompts[i // k]["prompt"], answer, template, reward_tokenizer)
             for i, answer in enumerate(rollout.answers)]
    scores = shared_scores(reward_model, reward_tokenizer, texts, k, batch_size) if shared and k > 1 else None
    return scores if scores is not None else torch.tensor(score_texts(reward_model, reward_tokenizer, texts,
                                                                      batch_size)[0])


def shared_scores(reward_model: PreTrainedModel, reward_tokenizer: PreTrainedTokenizerBase, texts: list[str], k: int,
                  batch_size: int) -> torch.Tensor | None:
    """Each text's score from rows `[common start, rest_1, ..., rest_K]` over each group of K texts, read at each
    text's last token, which is where pipeline() reads it; None where that is not exact or not tested
    (can_share_rows)."""
    encoded = reward_tokenizer(texts)["input_ids"]
    if not can_share_rows(reward_model, encoded):
        return None
    groups = [encoded[first:first + k] for first in range(0, len(encoded), k)]
    return torch.tensor([score for group in shared_row_scores(reward_model, groups, batch_size) for score in group])
