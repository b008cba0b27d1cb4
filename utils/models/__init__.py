"""Tokenizers and models: loading with the pad and EOS rules, where a reward is read, LoRA, export, converters."""
