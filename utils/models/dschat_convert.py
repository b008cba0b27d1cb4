"""A DeepSpeed-Chat step-2 output as a reward model that transformers loads.

DeepSpeed-Chat saves its RewardModel's state dict as pytorch_model.bin: the backbone under `rwtranrsformer.` (its
spelling; `rwtransformer.` is read too) and the value head as `v_head.weight`, beside the backbone's config.json and
the tokenizer's vocabulary files. The conversion gives a one-label *ForSequenceClassification model whose head is
`score.weight`, in safetensors, with a full tokenizer and a pad token of its own. Its pipeline() score of a text is
the score DeepSpeed-Chat's first_pad rule read for the same tokens: the value at the last token before padding.

    python -m utils.models.dschat_convert DSCHAT_DIR OUT_DIR [--tokenizer NAME_OR_DIR]
"""
from __future__ import annotations

import argparse
import json
import pickle
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from utils.errors import UserError, exit_on_error

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# torch and transformers are imported where they are used, so that the command's --help and a bad flag answer at once

WEIGHTS = "pytorch_model.bin"
BACKBONE_PREFIXES = ("rwtranrsformer.", "rwtransformer.")
HEAD = "v_head.weight"


def _state_dict(src: Path) -> dict[str, torch.Tensor] | None:
    """The checkpoint's tensors, memory-mapped where the file allows it (only the keys are read until the weights
    are used); files in torch's old format are read whole."""
    import torch

    path = src / WEIGHTS
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        pass
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, ValueError, pickle.UnpicklingError) as err:
        raise UserError(f"cannot read {path}: {err}") from None


def _backbone_prefix(state: dict[str, torch.Tensor]) -> str | None:
    return next((p for p in BACKBONE_PREFIXES if any(k.startswith(p) for k in state)), None)


def is_dschat_checkpoint(src: str | Path) -> bool:
    """Whether a folder holds DeepSpeed-Chat's layout; any other weights file, readable or not, is left to
    transformers."""
    src = Path(src)
    if not (src / WEIGHTS).is_file() or (src / "model.safetensors").exists():
        return False
    try:
        state = _state_dict(src)
    except UserError:
        return False
    return isinstance(state, dict) and HEAD in state and _backbone_prefix(state) is not None


def _tokenizer_source(src: Path, given: str | None) -> str:
    """DeepSpeed-Chat saves only vocabulary files, which do not say which special tokens the tokenizer adds; the full
    tokenizer comes from --tokenizer, the checkpoint folder if it holds one, or the name its config.json records."""
    if given:
        return given
    if (src / "tokenizer_config.json").exists() or (src / "tokenizer.json").exists():
        return str(src)
    recorded = json.loads((src / "config.json").read_text()).get("_name_or_path")
    if recorded:
        return recorded
    raise UserError(f"{src} holds only vocabulary files and its config.json names no base model: pass --tokenizer with "
                    "the tokenizer DeepSpeed-Chat trained with (e.g. facebook/opt-350m)")


def convert(src: str | Path, tokenizer_name: str | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from utils.models.loading import fit_to_tokenizer, use_dedicated_pad

    src = Path(src)
    state = _state_dict(src)
    prefix = _backbone_prefix(state) if state is not None else None
    if prefix is None or HEAD not in state:
        raise UserError(f"{src} is not a DeepSpeed-Chat reward model: expected {WEIGHTS} with "
                        f"{BACKBONE_PREFIXES[0]}* and {HEAD} weights")
    config = AutoConfig.from_pretrained(src, num_labels=1, id2label={0: "reward"}, label2id={"reward": 0})
    source = _tokenizer_source(src, tokenizer_name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load the tokenizer '{source}' for {src}: {err}; pass --tokenizer") from None
    use_dedicated_pad(tokenizer)
    tokenizer.padding_side = "right"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    weights = {f"{model.base_model_prefix}.{k[len(prefix):]}": v for k, v in state.items() if k.startswith(prefix)}
    weights["score.weight"] = state[HEAD]
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise UserError(f"{src}: the weights do not fit a {type(model).__name__} built from its config.json "
                        f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    fit_to_tokenizer(model, tokenizer)
    return model.eval(), tokenizer


@exit_on_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="A DeepSpeed-Chat step-2 output folder.")
    parser.add_argument("out_dir")
    parser.add_argument("--tokenizer", help="The tokenizer DeepSpeed-Chat trained with (default: the folder's own, "
                                            "or the base model its config.json names).")
    args = parser.parse_args()
    from utils.models.portable import make_portable

    model, tokenizer = convert(args.src, args.tokenizer)
    model.save_pretrained(args.out_dir)
    tokenizer.save_pretrained(args.out_dir)
    make_portable(args.out_dir, tokenizer)
    print(f"DeepSpeed-Chat reward model {args.src} converted to {args.out_dir} "
          f"({type(model).__name__}, score.weight, pad token {tokenizer.pad_token!r})")


if __name__ == "__main__":
    main()
