"""Tiny OPT-, Llama- and GPT-2-shaped models with tokenizers trained on the fly: the embedded demo and test fixtures.

Nothing here downloads: the tokenizer is trained on synthetic text and the weights are random.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from utils.data.formatting import format_text
from utils.data.synthetic import generate_pairs

# OPT: BOS and EOS are both </s>, so the BOS counts as DeepSpeed-Chat's one "padding at beginning", and <pad> exists.
# Llama: BOS <s> differs from EOS </s>, and there is no pad token.
# GPT-2: <|endoftext|> is BOS, EOS and, as in many fine-tunes, pad; no BOS is put before a text.
FAMILIES = {
    "opt": {"specials": ["<s>", "<pad>", "</s>", "<unk>"], "bos": "</s>", "eos": "</s>", "pad": "<pad>",
            "add_bos": True},
    "llama": {"specials": ["<unk>", "<s>", "</s>"], "bos": "<s>", "eos": "</s>", "pad": None, "add_bos": True},
    "gpt2": {"specials": ["<|endoftext|>", "<unk>"], "bos": "<|endoftext|>", "eos": "<|endoftext|>",
             "pad": "<|endoftext|>", "add_bos": False},
}


def synthetic_corpus(n_pairs: int) -> list[str]:
    """Texts of the synthetic pairs in the plain templates, to train a tokenizer on."""
    rows = generate_pairs(n_pairs, seed=12345)
    return [format_text(r["prompt"], r[answer], template)
            for r in rows for answer in ("chosen", "rejected") for template in ("dschat", "lmflow")]


def train_bpe(corpus: Iterable[str], specials: list[str], bos: str | None, eos: str, pad: str | None = None,
              vocab_size: int = 1000, add_bos: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `corpus` with `specials` as single tokens: the one tokenizer builder of the demo,
    the tests and the benchmark. `add_bos` puts the BOS first, as Llama and OPT tokenizers do (Qwen's does not)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    if bos is not None and add_bos:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
                                   unk_token="<unk>")


def build_tokenizer(family: str, vocab_size: int = 1000, corpus_pairs: int = 2000) -> PreTrainedTokenizerFast:
    """A family's tokenizer, trained on the synthetic data's texts."""
    spec = FAMILIES[family]
    return train_bpe(synthetic_corpus(corpus_pairs), spec["specials"], spec["bos"], spec["eos"], spec["pad"],
                     vocab_size, spec["add_bos"])


def build_tiny_model(out_dir: str | Path, family: str = "opt", hidden: int = 64, layers: int = 2, heads: int = 4,
                     vocab_size: int = 1000, seed: int = 0, tokenizer: PreTrainedTokenizerBase | None = None) -> Path:
    """Save a random-weight causal LM and its tokenizer (the family's own, or `tokenizer`) to `out_dir`, loadable
    with from_pretrained. Llama models take Llama 3's RoPE base, so that a lost RoPE setting changes their scores."""
    import torch

    torch.manual_seed(seed)
    tokenizer = tokenizer or build_tokenizer(family, vocab_size)
    ids = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id, max_position_embeddings=1024)
    if family == "opt":
        model = OPTForCausalLM(OPTConfig(hidden_size=hidden, word_embed_proj_dim=hidden, ffn_dim=4 * hidden,
                                         num_hidden_layers=layers, num_attention_heads=heads, **ids))
    elif family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                           **ids))
    else:
        model = LlamaForCausalLM(LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden,
                                             num_hidden_layers=layers, num_attention_heads=heads,
                                             num_key_value_heads=max(1, heads // 2),
                                             rope_parameters={"rope_type": "default", "rope_theta": 500000.0}, **ids))
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Build a tiny random-weight model and tokenizer for demos and tests.")
    parser.add_argument("out_dir")
    parser.add_argument("--family", choices=sorted(FAMILIES), default="opt")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--reward", action="store_true",
                        help="Save a reward model (a random score head on the random backbone) for step 3's benchmarks")
    args = parser.parse_args()
    path = build_tiny_model(args.out_dir, args.family, args.hidden, args.layers, args.heads)
    if args.reward:
        from transformers import AutoModelForSequenceClassification

        AutoModelForSequenceClassification.from_pretrained(path, num_labels=1).save_pretrained(path)
    print(f"tiny {args.family} {'reward' if args.reward else 'causal LM'} model written to {path}")


if __name__ == "__main__":
    main()
