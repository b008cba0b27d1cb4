"""The one function that turns a prompt and an answer into text, for training and for scoring."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Template:
    description: str
    prompt: Callable[[str], str]


def _answer(answer: str) -> str:
    """Answers follow the prompt after one space, unless they bring their own leading whitespace."""
    return answer if answer[:1].isspace() else " " + answer


TEMPLATES: dict[str, Template] = {
    "dschat": Template("' Human: {prompt} Assistant: {answer}' (DeepSpeed-Chat)",
                       lambda prompt: f" Human: {prompt} Assistant:"),
    "lmflow": Template("'###Human: {prompt}###Assistant: {answer}' (LMFlow HH-RLHF)",
                       lambda prompt: f"###Human: {prompt}###Assistant:"),
}


def format_prompt(prompt: str, template: str) -> str:
    return TEMPLATES[template].prompt(prompt)


def format_text(prompt: str, answer: str, template: str) -> str:
    """Prompt and answer as one string; the tokenizer appends the EOS id (see utils.model.load_tokenizer)."""
    return format_prompt(prompt, template) + _answer(answer)
