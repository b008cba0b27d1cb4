"""Loading tokenizers and models with the pad and EOS rules of docs/reward-scores.md."""
from __future__ import annotations

import warnings

import torch
from tokenizers import processors
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from utils.errors import UserError

DEDICATED_PAD = "<|pad|>"


def _load(what: str, loader, name: str, **kwargs):
    try:
        return loader(name, **kwargs)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load the {what} of '{name}': {err}") from None


def _append_eos(tokenizer: PreTrainedTokenizerBase) -> None:
    """Make the tokenizer end every text with the EOS id, so that a pipeline scores what training scored.

    Added to the post-processor (saved in tokenizer.json), after whatever BOS handling it already does.
    """
    probe = tokenizer("a")["input_ids"]
    if probe and probe[-1] == tokenizer.eos_token_id:
        return
    backend = tokenizer.backend_tokenizer
    append = processors.TemplateProcessing(single=f"$A:0 {tokenizer.eos_token}:0",
                                           pair=f"$A:0 $B:1 {tokenizer.eos_token}:1",
                                           special_tokens=[(tokenizer.eos_token, tokenizer.eos_token_id)])
    current = backend.post_processor
    backend.post_processor = append if current is None else processors.Sequence([current, append])


def load_tokenizer(name: str, score_token: str, append_eos: bool, eot_token: str | None = None,
                   trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer with the pad rule for `score_token`, right padding, and optionally EOS appended to every text.

    first_pad reproduces DeepSpeed-Chat (pad = EOS). Otherwise a missing pad, or a pad that is the EOS, is replaced
    by a dedicated pad token: pad = EOS would hide the scored EOS from the model's own pooling.
    `eot_token` (DeepSpeed-Chat's --add_eot_token) becomes a single special token and the EOS that ends every text.
    """
    tokenizer = _load("tokenizer", AutoTokenizer.from_pretrained, name, trust_remote_code=trust_remote_code)
    if not tokenizer.is_fast:
        raise UserError(f"'{name}' has no fast (tokenizers) tokenizer, which the EOS and offset rules need")
    if eot_token is not None:
        tokenizer.add_special_tokens({"eos_token": eot_token})
    if tokenizer.eos_token is None:
        raise UserError(f"the tokenizer of '{name}' has no EOS token: set eos_token in its tokenizer_config.json")
    if score_token == "first_pad":
        tokenizer.pad_token = tokenizer.eos_token
    else:
        use_dedicated_pad(tokenizer)
    tokenizer.padding_side = "right"
    if append_eos:
        _append_eos(tokenizer)
    return tokenizer


def use_dedicated_pad(tokenizer: PreTrainedTokenizerBase) -> None:
    """A pad token of its own where there is none, or where it is the EOS: pad = EOS would hide the scored EOS from
    the model's pooling."""
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.add_special_tokens({"pad_token": DEDICATED_PAD})


def fit_to_tokenizer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Embeddings sized for the tokenizer's added tokens, and the pad id the model's own pooling looks for."""
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id


def leading_eos_count(tokenizer: PreTrainedTokenizerBase) -> int:
    """How many EOS ids the tokenizer puts before a text: DeepSpeed-Chat's --num_padding_at_beginning."""
    ids = tokenizer("Hello")["input_ids"]
    count = 0
    while count < len(ids) and ids[count] == tokenizer.eos_token_id:
        count += 1
    return count


def resolve_num_padding(tokenizer: PreTrainedTokenizerBase, given: int | None, score_token: str, name: str,
                        template: str) -> int:
    """Check --num_padding_at_beginning against the tokenizer: an error where first_pad needs it, else a warning.

    first_pad reads the score before the first EOS after the leading ones, and a chat template may end every turn
    with one, so that a multi-turn prompt would be scored at its first turn: that pairing is refused."""
    if score_token == "first_pad" and template == "chat":
        raise UserError("--score_token first_pad reads the score before the first EOS, and a chat template may end "
                        "every turn with one: use --score_token end with --template chat")
    actual = leading_eos_count(tokenizer)
    if given is None or given == actual:
        return actual
    message = (f"--num_padding_at_beginning {given} does not match the tokenizer of '{name}', which puts {actual} "
               f"EOS/pad id(s) before each text; set --num_padding_at_beginning {actual}")
    if score_token == "first_pad":
        raise UserError(message)
    warnings.warn(message + " (ignored: --score_token end does not use it)", stacklevel=2)
    return actual


def _set_dropout(config: PretrainedConfig, dropout: float) -> None:
    for key in ("dropout", "attention_dropout", "hidden_dropout", "activation_dropout", "resid_pdrop", "embd_pdrop",
                "attn_pdrop", "hidden_dropout_prob", "attention_probs_dropout_prob"):
        if hasattr(config, key):
            setattr(config, key, dropout)


def _load_model(auto_class, name: str, tokenizer: PreTrainedTokenizerBase, dropout: float | None,
                gradient_checkpointing: bool, trust_remote_code: bool, **config_updates) -> PreTrainedModel:
    """Any auto class's model in fp32 (DeepSpeed casts it), its embeddings sized for the tokenizer's added tokens."""
    config = _load("config", AutoConfig.from_pretrained, name, trust_remote_code=trust_remote_code)
    for key, value in config_updates.items():
        setattr(config, key, value)
    if dropout is not None:
        _set_dropout(config, dropout)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*newly initialized.*")
        model = _load("weights", auto_class.from_pretrained, name, config=config, dtype=torch.float32,
                      trust_remote_code=trust_remote_code)
    fit_to_tokenizer(model, tokenizer)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def load_reward_model(name: str, tokenizer: PreTrainedTokenizerBase, dropout: float | None,
                      gradient_checkpointing: bool, trust_remote_code: bool = False) -> PreTrainedModel:
    """A one-label sequence-classification model on any causal-LM backbone (a step-1 output included); its own
    pooling finds the scored token through config.pad_token_id."""
    return _load_model(AutoModelForSequenceClassification, name, tokenizer, dropout, gradient_checkpointing,
                       trust_remote_code, num_labels=1, id2label={0: "reward"}, label2id={"reward": 0})


def load_causal_lm(name: str, tokenizer: PreTrainedTokenizerBase, dropout: float | None,
                   gradient_checkpointing: bool, trust_remote_code: bool = False) -> PreTrainedModel:
    """A causal LM whose generation stops at the EOS that training appended, and pads with the tokenizer's pad."""
    model = _load_model(AutoModelForCausalLM, name, tokenizer, dropout, gradient_checkpointing, trust_remote_code)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean (rows, 1, width, width) mask (True: may attend) as the additive mask transformers' attention takes
    as it is, in the compute dtype."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
