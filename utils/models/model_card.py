"""README.md for an exported model: what it is, how to load it, how it was trained and how it scored, so that the
directory explains itself on the hub, in RewardBench and in RLHF code."""
from __future__ import annotations

import argparse
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from utils.data.formatting import format_prompt, format_text

EXAMPLE = ("What is 2 plus 2?", "2 plus 2 is 4.")
FIGURES = {"reward": ("accuracy", "loss", "chosen_mean", "rejected_mean", "margin_mean", "pairs"),
           "sft": ("perplexity", "loss", "tokens"),
           "rlhf": ("reward", "reward_before", "kl_to_reference", "eos_share", "distinct2", "win_rate", "prompts",
                    "pair_accuracy", "pair_margin", "pairs")}


def _hub_names(names: list[str]) -> list[str]:
    """Names that can only be hub repositories: an owner/name that is not a local path."""
    return [n for n in names if n.count("/") == 1 and not n.startswith((".", "/", "~")) and not Path(n).exists()]


def _front_matter(args: argparse.Namespace, kind: str) -> list[str]:
    reward = kind == "reward"
    lines = ["---", "library_name: transformers",
             f"pipeline_tag: {'text-classification' if reward else 'text-generation'}",
             f"tags: [{'reward-model' if reward else kind}, rlhf-steps]"]
    base = _hub_names([args.model_name_or_path])
    if base:
        lines.append(f"base_model: {base[0]}")
    datasets = _hub_names(args.data_path + _step_only(args))
    if datasets:
        lines.append(f"datasets: [{', '.join(datasets)}]")
    return lines + ["---", ""]


def _usage(reward: bool, template: str, tokenizer: PreTrainedTokenizerBase) -> list[str]:
    if reward:
        text = format_text(*EXAMPLE, template, tokenizer)
        code = ['from transformers import pipeline', '',
                'rm = pipeline("text-classification", model="THIS_DIR", function_to_apply="none")',
                f'score = rm({text!r})[0]["score"]']
        end = ("The text is the chat template's own, up to and with its end-of-turn, where the score is read"
               if template == "chat" else "The tokenizer appends the EOS id, where the score is read")
        note = (f"Scores are raw rewards (no sigmoid). {end}; write each prompt and answer as training did (the "
                f"`{template}` template), as in the example.")
    else:
        prompt = format_prompt(EXAMPLE[0], template, tokenizer)
        code = ['from transformers import pipeline', '',
                'lm = pipeline("text-generation", model="THIS_DIR")',
                f'print(lm({prompt!r}, max_new_tokens=64)[0]["generated_text"])']
        note = f"Prompts are written with the `{template}` template, as in the example."
    return ["## Use", "", "```python", *code, "```", "", note, ""]


def _step_only(args: argparse.Namespace) -> list[str]:
    """--sft_only_data_path (step 1) or --prompt_data_path (step 3): sources the step trains on whole."""
    return getattr(args, "sft_only_data_path", None) or getattr(args, "prompt_data_path", None) or []


def _sources(args: argparse.Namespace) -> list[str]:
    shared = [f"{', '.join(args.data_path)} (split `{args.train_split}`, --data_split {args.data_split})"]
    only = [f"{', '.join(_step_only(args))} (all rows)"] if _step_only(args) else []
    return (shared if args.data_path else []) + only


def _training(args: argparse.Namespace, world_size: int, kind: str, algorithm: str | None) -> list[str]:
    evals = (", ".join(args.eval_data_path) if args.eval_data_path else f"split `{args.eval_split}`"
             if args.eval_split else f"each source's test split, or a held-out {args.eval_fraction:g} of its rows")
    rows = [("base model", args.model_name_or_path),
            ("data", "; ".join(_sources(args))),
            ("eval data", evals),
            ("template", args.template),
            ("epochs, learning rate, schedule",
             f"{args.num_train_epochs}, {args.learning_rate:g}, {args.lr_scheduler_type} with "
             f"{args.num_warmup_steps} warm-up steps"),
            ("weight decay", f"{args.weight_decay:g}"),
            ("global batch", f"{args.per_device_train_batch_size} per device × {args.gradient_accumulation_steps} "
                             f"accumulation × {world_size} process(es)"),
            ("max length, over-length rows", f"{args.max_seq_len} tokens, {args.overlength}"),
            ("precision, ZeRO stage", f"{args.dtype or 'default'}, {args.zero_stage}")]
    if kind == "reward":
        rows.insert(4, ("score token, loss", f"{args.score_token}, {args.loss}"))
    if kind == "rlhf":
        rows[0] = ("policy (actor)", args.model_name_or_path)
        rows.insert(1, ("reward model", args.reward_model_name_or_path or "none"))
        rows.insert(4, ("algorithm", algorithm))
    if args.lora_dim:
        rows.append(("LoRA (merged)", f"rank {args.lora_dim}, alpha {args.lora_alpha or args.lora_dim:g}, on "
                                      f"`{args.lora_module_name}`, lr {args.lora_learning_rate:g}"
                                      + (", adapters only" if args.only_optimize_lora else "")))
    return ["## Training", "", "| setting | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], "",
            "All flags are in `training_args.json`.", ""]


def model_card(args: argparse.Namespace, final: dict, tokenizer: PreTrainedTokenizerBase, world_size: int,
               kind: str, algorithm: str | None = None) -> str:
    """kind: sft, reward or rlhf (step 3's policy, trained by `algorithm`, its settings in a few words)."""
    figures = [k for k in FIGURES[kind] if k in final]
    what = {"reward": "A reward model: one score per text, from a sequence-classification head (`score`, one label) "
                      f"on `{args.model_name_or_path}`, trained on preference pairs with rlhf-steps step 2.",
            "sft": f"A causal LM fine-tuned from `{args.model_name_or_path}` on prompts and chosen answers with "
                   "rlhf-steps step 1.",
            "rlhf": f"A causal LM improved from `{args.model_name_or_path}` "
                    + (f"with the reward model `{args.reward_model_name_or_path}` "
                       if getattr(args, "reward_model_name_or_path", None) else "on preference pairs ")
                    + f"by {getattr(args, 'algo', '').upper()}, rlhf-steps step 3."}[kind]
    evaluation = ["## Evaluation", "", "On the held-out split at the end of training (`eval_results.json`):", "",
                  "| " + " | ".join(figures) + " |", "|" + "---|" * len(figures),
                  "| " + " | ".join(f"{final[k]:.4g}" if isinstance(final[k], float) else str(final[k])
                                    for k in figures) + " |", ""]
    title = {"reward": "Reward model", "sft": "Fine-tuned model", "rlhf": "RLHF policy"}[kind]
    return "\n".join([*_front_matter(args, kind), f"# {title} trained from {args.model_name_or_path}", "", what, "",
                      *_usage(kind == "reward", args.template, tokenizer),
                      *_training(args, world_size, kind, algorithm), *evaluation])
