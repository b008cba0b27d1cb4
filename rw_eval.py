"""Score prompt-answer pairs with a reward model directory, formatted exactly as in training.

    python rw_eval.py --model_name_or_path DIR                      # built-in good/bad examples
    python rw_eval.py --model_name_or_path DIR --prompt P --answer A [--prompt P2 --answer A2 ...]
"""
from __future__ import annotations

import argparse

from transformers import pipeline

from utils.errors import UserError, exit_on_user_error
from utils.formatting import TEMPLATES, format_text

# A prompt, a good answer and a bad one: a trained reward model should score the good one higher.
EXAMPLES = [
    ("What is the capital of France?", "The capital of France is Paris.", "I'm not sure."),
    ("What is 3 plus 4?", "3 plus 4 is 7.", "3 plus 4 is 9."),
    ("How many legs does a spider have?", "A spider has eight legs.", "Figure it out yourself."),
    ("What color is snow?", "Snow is white.", "Snow snow snow snow snow."),
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="An exported reward model directory.")
    parser.add_argument("--prompt", action="append", default=[], help="A prompt; repeat, one per --answer.")
    parser.add_argument("--answer", action="append", default=[], help="The answer to the matching --prompt.")
    parser.add_argument("--template", choices=sorted(TEMPLATES), default="dschat",
                        help="The template the model was trained with. Default: %(default)s")
    parser.add_argument("--batch_size", type=int, default=16)
    return parser


def score(model_dir: str, rows: list[tuple[str, str]], template: str, batch_size: int) -> list[float]:
    """Scores as any transformers user gets them: pipeline() with no activation on the single logit, on texts
    formatted by the training formatter (the chat template needs the model's tokenizer)."""
    try:
        scorer = pipeline("text-classification", model=model_dir, function_to_apply="none")
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load a reward model from '{model_dir}': {err}") from None
    texts = [format_text(prompt, answer, template, scorer.tokenizer) for prompt, answer in rows]
    return [out["score"] for out in scorer(texts, batch_size=batch_size)]


@exit_on_user_error
def main() -> None:
    args = _parser().parse_args()
    if len(args.prompt) != len(args.answer):
        raise UserError(f"got {len(args.prompt)} --prompt and {len(args.answer)} --answer: give one answer per prompt")
    if args.prompt:
        rows = list(zip(args.prompt, args.answer))
    else:
        rows = [(p, a) for p, good, bad in EXAMPLES for a in (good, bad)]
    scores = score(args.model_name_or_path, rows, args.template, args.batch_size)
    print(f"{'score':>9}  prompt | answer")
    for (prompt, answer), value in zip(rows, scores):
        print(f"{value:9.4f}  {prompt} | {answer}")
    if not args.prompt:
        wins = sum(scores[i] > scores[i + 1] for i in range(0, len(scores), 2))
        print(f"good answer scored higher in {wins} of {len(EXAMPLES)} examples")


if __name__ == "__main__":
    main()
