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


TRANSCRIPT_MARKERS = {"dschat": ("\n\nHuman:", "\n\nAssistant:"), "lmflow": ("###Human:", "###Assistant:")}


def format_prompt(prompt: str, template: str) -> str:
    """A plain question is wrapped; an Anthropic-style transcript ("\n\nHuman: ...\n\nAssistant:", as in
    Dahoas/rm-static) already holds its turns, so it keeps them, rewritten to the template's markers."""
    if TRANSCRIPT_MARKERS["dschat"][0] not in prompt:
        return TEMPLATES[template].prompt(prompt)
    for old, new in zip(TRANSCRIPT_MARKERS["dschat"], TRANSCRIPT_MARKERS[template]):
        prompt = prompt.replace(old, new)
    return prompt


def format_text(prompt: str, answer: str, template: str) -> str:
    """Prompt and answer as one string; the tokenizer appends the EOS id (see utils.model.load_tokenizer)."""
    return format_prompt(prompt, template) + _answer(answer)
