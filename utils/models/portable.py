"""Saved model folders that mean the same to transformers 4.x (4.45 and later; RewardBench pins 4.51) and 5.x.

transformers 5 writes some settings where 4.x does not look, or in a form it cannot read. Each is rewritten here so
that both versions build the same tokenizer and the same model from the folder:

- tokenizer_config.json: the generic fast class (4.x has no `TokenizersBackend`, and its Llama class rebuilds the
  post-processor from flags); `add_bos_token`/`add_eos_token` as the tokenizer really behaves, since both versions'
  Llama classes and 5.x's generic one rebuild the post-processor from them; extra special tokens under the key both
  read; and the model's input names (4.x's generic class would also return `token_type_ids`).
- config.json: `torch_dtype`, and RoPE settings as `rope_theta`/`rope_scaling`, which 4.x reads instead of
  `rope_parameters` (without them it silently falls back to theta 10,000).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

GENERIC_TOKENIZER = "PreTrainedTokenizerFast"


def _special_token_flags(tokenizer: PreTrainedTokenizerBase) -> dict[str, bool] | None:
    """add_bos_token and add_eos_token that rebuild exactly what the tokenizer does to a text, or None where those
    two flags cannot express it (then the post-processor in tokenizer.json is left to speak alone)."""
    ids = tokenizer("a")["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    flags = {"add_bos_token": tokenizer.bos_token_id is not None and ids[:1] == [tokenizer.bos_token_id],
             "add_eos_token": tokenizer.eos_token_id is not None and ids[-1:] == [tokenizer.eos_token_id]}
    bos = [tokenizer.bos_token_id] * flags["add_bos_token"]
    return flags if bos + plain + [tokenizer.eos_token_id] * flags["add_eos_token"] == ids else None


def portable_tokenizer_config(config: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    # load-time options that 5.x records with the settings; they are not the tokenizer's
    config = {k: v for k, v in config.items() if k not in ("add_bos_token", "add_eos_token", "is_local",
                                                           "local_files_only")}
    config["tokenizer_class"] = GENERIC_TOKENIZER
    config["model_input_names"] = ["input_ids", "attention_mask"]
    config.update(_special_token_flags(tokenizer) or {})
    extra = config.pop("extra_special_tokens", None)
    if isinstance(extra, list) and extra:  # 5.x writes a list here, where 4.x expects a dict; both read this key
        config["additional_special_tokens"] = extra
    elif isinstance(extra, dict) and extra:
        config["extra_special_tokens"] = extra
    if isinstance(tokenizer.chat_template, str):  # as in chat_template.jinja, which older 4.x do not read
        config["chat_template"] = tokenizer.chat_template
    return config


def portable_model_config(config: dict[str, Any]) -> dict[str, Any]:
    config = dict(config)
    if "dtype" in config:
        config.setdefault("torch_dtype", config["dtype"])
    rope = config.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope:
        config["rope_theta"] = rope["rope_theta"]
        if rope.get("rope_type", "default") != "default":
            config["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    return config


def make_portable(folder: str | Path, tokenizer: PreTrainedTokenizerBase) -> None:
    """Rewrite a folder that save_pretrained wrote, for both transformers versions."""
    folder = Path(folder)
    for name, rewrite in (("tokenizer_config.json", lambda c: portable_tokenizer_config(c, tokenizer)),
                          ("config.json", portable_model_config)):
        path = folder / name
        if path.is_file():
            path.write_text(json.dumps(rewrite(json.loads(path.read_text())), indent=2, ensure_ascii=False) + "\n")
