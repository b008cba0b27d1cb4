"""Turning a prompt and an answer into text, for training, scoring and generation.

A prompt is a plain question, an Anthropic-style transcript ("\n\nHuman: ...\n\nAssistant:", as in Dahoas/rm-static),
or a list of chat messages ({"role": "system" | "user" | "assistant", "content": ...}) that stops before the answer.
dschat and lmflow write every prompt with their own turn markers, for base models; chat has the tokenizer's chat
template write it, so that a chat model sees the format it was tuned on.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from jinja2 import TemplateError

from utils.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"  # the turn markers of an Anthropic transcript
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Template:
    """`question` wraps a plain question and `markers` replace a transcript's HUMAN and ASSISTANT; a template with
    neither (chat) leaves all of the writing to the tokenizer's chat template."""
    description: str
    question: Callable[[str], str] | None = None
    markers: tuple[str, str] | None = None


TEMPLATES: dict[str, Template] = {
    "dschat": Template("' Human: {prompt} Assistant: {answer}' (DeepSpeed-Chat)",
                       lambda prompt: f" Human: {prompt} Assistant:", (HUMAN, ASSISTANT)),
    "lmflow": Template("'###Human: {prompt}###Assistant: {answer}' (LMFlow HH-RLHF)",
                       lambda prompt: f"###Human: {prompt}###Assistant:", ("###Human:", "###Assistant:")),
    "chat": Template("the tokenizer's own chat template (apply_chat_template), for chat and instruct models"),
}


def _answer(answer: str) -> str:
    """Answers follow the prompt after one space, unless they bring their own leading whitespace."""
    return answer if answer[:1].isspace() else " " + answer


def _checked(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Catch a malformed message list here, with a message that says what is wrong, not deep in a template."""
    if not messages or not all(isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
                               for m in messages):
        raise UserError("a message-list prompt must be a non-empty list of {'role': 'system', 'user' or 'assistant', "
                        "'content': str}")
    if messages[-1]["role"] == "assistant":
        raise UserError("a prompt must stop before the answer, but its last message is an assistant turn")
    return messages


def _transcript(messages: list[dict[str, str]]) -> str:
    """Messages as an Anthropic transcript that ends with an open Assistant turn. A transcript has no system marker,
    so a leading system message becomes plain text before the first turn (where _messages reads it back from)."""
    system = messages[0]["content"] if messages[0]["role"] == "system" else ""
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    if any(m["role"] == "system" for m in turns):
        raise UserError("the dschat and lmflow templates can only write a system message that comes first")
    return system + "".join(f"{HUMAN if m['role'] == 'user' else ASSISTANT} {m['content']}" for m in turns) + ASSISTANT


def _messages(prompt: str | list[dict[str, str]]) -> list[dict[str, str]]:
    """A prompt as chat messages: a plain question is one user message; a transcript's turns become user and
    assistant messages, with text before its first turn as a system message and its final empty Assistant turn
    dropped (the answer goes there). Every content is stripped, the answer's too (format_text), so that no turn is
    written differently for where it stands."""
    if not isinstance(prompt, str):
        return [{"role": m["role"], "content": m["content"].strip()} for m in _checked(prompt)]
    if HUMAN not in prompt:
        return [{"role": "user", "content": prompt.strip()}]
    head, *turns = re.split(r"\n\n(Human|Assistant):", prompt)
    messages = [{"role": "system", "content": head.strip()}] if head.strip() else []
    messages += [{"role": "user" if who == "Human" else "assistant", "content": text.strip()}
                 for who, text in zip(turns[::2], turns[1::2])]
    if messages[-1] == {"role": "assistant", "content": ""}:
        messages.pop()
    return _checked(messages)


def _render_chat(messages: list[dict[str, str]], tokenizer: PreTrainedTokenizerBase | None,
                 add_generation_prompt: bool = False) -> str:
    """The tokenizer's chat template applied to `messages`. A template that writes the BOS itself (Llama-3's) would
    double the BOS a tokenizer adds when it tokenizes, so the written one goes in that case."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        who = "none was given" if tokenizer is None else f"'{tokenizer.name_or_path or 'this tokenizer'}' has none"
        raise UserError(f"--template chat needs a tokenizer with a chat template; {who} "
                        "(use --template dschat or lmflow for a base model)")
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except TemplateError as err:
        raise UserError(f"--template chat: the tokenizer's chat template refused a prompt: {err}") from None
    bos = tokenizer.bos_token
    if bos and text.startswith(bos) and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]:
        return text[len(bos):]
    return text


def format_prompt(prompt: str | list[dict[str, str]], template: str,
                  tokenizer: PreTrainedTokenizerBase | None = None) -> str:
    """The prompt as text that asks for the answer. dschat and lmflow wrap a plain question; a transcript already
    holds its turns, so it keeps them, rewritten to the template's markers, and a message list is written as one.
    chat needs `tokenizer` (its chat template, with the generation prompt); the others ignore it."""
    fmt = TEMPLATES[template]
    if fmt.markers is None:
        return _render_chat(_messages(prompt), tokenizer, add_generation_prompt=True)
    if not isinstance(prompt, str):
        prompt = _transcript(_checked(prompt))
    elif HUMAN not in prompt:
        return fmt.question(prompt)
    return prompt.replace(HUMAN, fmt.markers[0]).replace(ASSISTANT, fmt.markers[1])


def format_text(prompt: str | list[dict[str, str]], answer: str, template: str,
                tokenizer: PreTrainedTokenizerBase | None = None) -> str:
    """Prompt and answer as one string, which starts with format_prompt's text: the encoder finds the answer's tokens
    by that character offset.

    dschat and lmflow end with the answer, and the reward model's tokenizer appends the EOS id (see
    utils.models.loading.load_tokenizer). chat is exactly what the chat template writes for the conversation, up to
    and with its last end-of-turn, less a leading BOS text that the tokenizer adds itself: the text that
    `apply_chat_template(messages, tokenize=False)` gives users once they remove the BOS text, and the ids that
    `apply_chat_template(messages)` gives them, so that their scores are the trainer's (docs/reward-scores.md)."""
    if TEMPLATES[template].markers is not None:
        return format_prompt(prompt, template) + _answer(answer)
    messages = _messages(prompt)
    prompt_text = _render_chat(messages, tokenizer, add_generation_prompt=True)
    text = _render_chat(messages + [{"role": "assistant", "content": answer.strip()}], tokenizer)
    if not text.startswith(prompt_text):
        raise UserError("--template chat: the chat template writes the prompt differently once an answer follows, "
                        "so the prompt text is not the start of the full text and the answer cannot be located")
    return text
