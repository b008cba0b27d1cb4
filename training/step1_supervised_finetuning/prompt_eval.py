"""Generations of a baseline and a fine-tuned causal LM side by side, for the same prompts and settings.

    python training/step1_supervised_finetuning/prompt_eval.py \\
        --model_name_or_path_baseline facebook/opt-1.3b --model_name_or_path_finetune out/step1 [--prompt P ...]
"""
from __future__ import annotations

import argparse
import json
import shutil
import textwrap
from itertools import zip_longest

from utils.errors import UserError, exit_on_error
from utils.data.formatting import TEMPLATES, format_prompt

PROMPTS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What is 12 plus 30?",
    "Can you suggest a name for a grey cat?",
    "Why is the sky blue?",
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path_baseline", required=True, help="The model before fine-tuning.")
    parser.add_argument("--model_name_or_path_finetune", required=True, help="The step-1 output directory.")
    parser.add_argument("--prompt", action="append", default=[], help="A prompt (repeat); default: built-in ones.")
    parser.add_argument("--template", choices=sorted(TEMPLATES), default="dschat",
                        help="The template used in training. Default: %(default)s")
    generation = parser.add_argument_group("generation")
    generation.add_argument("--max_new_tokens", type=int, default=100)
    generation.add_argument("--do_sample", action="store_true", help="Sample; default: greedy or beam search.")
    generation.add_argument("--top_k", type=int, default=50, help="With --do_sample. Default: %(default)s")
    generation.add_argument("--top_p", type=float, default=1.0, help="With --do_sample. Default: %(default)s")
    generation.add_argument("--temperature", type=float, default=1.0, help="With --do_sample. Default: %(default)s")
    generation.add_argument("--num_beams", type=int, default=1)
    generation.add_argument("--seed", type=int, default=1234, help="Each model starts sampling from this seed.")
    parser.add_argument("--device", default=None, help="Default: cuda when there is a GPU, else cpu.")
    parser.add_argument("--output", help="Also write the prompts and generations to this JSON file.")
    return parser


def generate(model: str, prompts: list[str], args: argparse.Namespace) -> list[str]:
    """What `model` writes after each formatted prompt; sampling restarts from --seed for each model."""
    import torch  # here, after the flags: --help and their mistakes answer at once
    from transformers import pipeline, set_seed

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        generator = pipeline("text-generation", model=model, device=device)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load a causal LM from '{model}': {err}") from None
    tokenizer = generator.tokenizer
    settings = {"max_new_tokens": args.max_new_tokens, "do_sample": args.do_sample, "num_beams": args.num_beams,
                "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                else tokenizer.eos_token_id}
    if args.do_sample:
        settings.update(top_k=args.top_k, top_p=args.top_p, temperature=args.temperature)
    set_seed(args.seed)
    return [generator(format_prompt(p, args.template, tokenizer), return_full_text=False, **settings)[0]["generated_text"]
            for p in prompts]


def _side_by_side(left: str, right: str, width: int) -> list[str]:
    columns = [textwrap.wrap(text.strip(), width) or ["(nothing)"] for text in (left, right)]
    return [f"{a:<{width}} | {b}" for a, b in zip_longest(*columns, fillvalue="")]


@exit_on_error
def main() -> None:
    args = _parser().parse_args()
    prompts = args.prompt or PROMPTS
    baseline = generate(args.model_name_or_path_baseline, prompts, args)
    finetuned = generate(args.model_name_or_path_finetune, prompts, args)
    width = max(30, (shutil.get_terminal_size((120, 24)).columns - 3) // 2)
    for prompt, before, after in zip(prompts, baseline, finetuned):
        print(f"\n=== {prompt}")
        print("\n".join(_side_by_side("baseline", "fine-tuned", width)))
        print("\n".join(_side_by_side(before, after, width)))
    if args.output:
        rows = [{"prompt": p, "baseline": b, "finetuned": f} for p, b, f in zip(prompts, baseline, finetuned)]
        with open(args.output, "w") as handle:
            json.dump({"settings": vars(args), "generations": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
