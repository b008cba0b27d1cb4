"""Prompt and text formatting: dschat and lmflow for every prompt shape, and chat through a tokenizer's template."""
from __future__ import annotations

import pytest
from transformers import PreTrainedTokenizerFast

from utils.data.formatting import TEMPLATES, format_prompt, format_text
from utils.errors import UserError
from utils.models.tiny import train_bpe

TRANSCRIPT = "\n\nHuman: Hi?\n\nAssistant: Hello!\n\nHuman: Bye?\n\nAssistant:"
LMFLOW = "###Human: Hi?###Assistant: Hello!###Human: Bye?###Assistant:"
MESSAGES = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Bye?"}]
SYSTEM = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]

# Llama-3-like: the template writes the BOS and ends each turn with <|eot_id|>.
LLAMA3 = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
          "{{ m['content'] }}<|eot_id|>{% endfor %}"
          "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
# ChatML-like (Qwen): no BOS, each turn ends with <|im_end|> and a newline.
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Writes the BOS and ends each turn with the EOS: with OPT's BOS == EOS == </s>, both must go.
EOS_TURNS = ("{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{{ eos_token }}{% endfor %}"
             "{% if add_generation_prompt %}[assistant]{% endif %}")
L3_USER_HI = "<|start_header_id|>user<|end_header_id|>\n\nHi?<|eot_id|>"
L3_ASSISTANT = "<|start_header_id|>assistant<|end_header_id|>\n\n"
SPECIALS = ["<unk>", "<s>", "</s>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|im_start|>",
            "<|im_end|>"]


def make_tokenizer(chat_template: str | None, bos: str | None, eos: str, adds_bos: bool) -> PreTrainedTokenizerFast:
    """A small tokenizer whose specials are single tokens; `adds_bos` makes it put the BOS first."""
    tokenizer = train_bpe(["Hi? Hello! Bye? Be brief. user assistant system"], SPECIALS, bos, eos, vocab_size=300,
                          add_bos=adds_bos)
    tokenizer.chat_template = chat_template
    return tokenizer


@pytest.fixture(scope="module")
def llama3():
    """Llama-3 base-like: the tokenizer adds <s> itself, EOS </s> is not the turn end."""
    return make_tokenizer(LLAMA3, "<s>", "</s>", adds_bos=True)


@pytest.fixture(scope="module")
def chatml():
    """Qwen-like: no BOS, and the EOS is the turn end <|im_end|>."""
    return make_tokenizer(CHATML, None, "<|im_end|>", adds_bos=False)


def test_chat_is_a_listed_template():
    assert sorted(TEMPLATES) == ["chat", "dschat", "lmflow"]
    assert TEMPLATES["chat"].description == ("the tokenizer's own chat template (apply_chat_template), "
                                             "for chat and instruct models")


def test_string_prompts_keep_their_dschat_and_lmflow_text(llama3):
    for tokenizer in (None, llama3):  # the tokenizer is ignored outside chat
        assert format_prompt("Hi?", "dschat", tokenizer) == " Human: Hi? Assistant:"
        assert format_text("Hi?", "Hello.", "dschat", tokenizer) == " Human: Hi? Assistant: Hello."
        assert format_text("Hi?", "Hello.", "lmflow", tokenizer) == "###Human: Hi?###Assistant: Hello."
        assert format_text("Hi?", "\nHello.", "lmflow", tokenizer) == "###Human: Hi?###Assistant:\nHello."
        assert format_prompt(TRANSCRIPT, "dschat", tokenizer) == TRANSCRIPT
        assert format_text(TRANSCRIPT, " Bye.", "dschat", tokenizer) == TRANSCRIPT + " Bye."
        assert format_prompt(TRANSCRIPT, "lmflow", tokenizer) == LMFLOW
        assert format_text(TRANSCRIPT, "Bye.", "lmflow", tokenizer) == LMFLOW + " Bye."


def test_message_lists_become_transcripts_for_dschat_and_lmflow():
    assert format_prompt(MESSAGES, "dschat") == TRANSCRIPT
    assert format_text(MESSAGES, "Bye.", "dschat") == TRANSCRIPT + " Bye."
    assert format_text(MESSAGES, "Bye.", "lmflow") == LMFLOW + " Bye."
    # unlike the plain question "Hi?", a one-message list is written as a transcript
    assert format_text(MESSAGES[:1], "Hello.", "dschat") == "\n\nHuman: Hi?\n\nAssistant: Hello."


def test_a_leading_system_message_is_plain_text_before_the_first_turn():
    assert format_prompt(SYSTEM, "dschat") == "Be brief.\n\nHuman: Hi?\n\nAssistant:"
    assert format_text(SYSTEM, "Hello.", "lmflow") == "Be brief.###Human: Hi?###Assistant: Hello."
    with pytest.raises(UserError, match="system message that comes first"):
        format_prompt(MESSAGES + [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "?"}],
                      "dschat")


def test_chat_plain_question_llama3(llama3):
    assert format_prompt("Hi?", "chat", llama3) == L3_USER_HI + L3_ASSISTANT
    assert format_text("Hi?", "Hello.", "chat", llama3) == L3_USER_HI + L3_ASSISTANT + "Hello.<|eot_id|>"


def test_chat_transcript_and_messages_give_the_same_chatml(chatml):
    prompt = ("<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
              "<|im_start|>user\nBye?<|im_end|>\n<|im_start|>assistant\n")
    for p in (TRANSCRIPT, MESSAGES):
        assert format_prompt(p, "chat", chatml) == prompt
        # the answer is stripped like every earlier turn, and the text ends as the template ends it
        assert format_text(p, " Bye.", "chat", chatml) == prompt + "Bye.<|im_end|>\n"


def test_chat_system_message_and_transcript_preamble(chatml):
    expected = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
    assert format_prompt(SYSTEM, "chat", chatml) == expected
    assert format_prompt("Be brief.\n\nHuman: Hi?\n\nAssistant:", "chat", chatml) == expected


def test_chat_tokenizes_to_one_bos_and_the_templates_own_end_of_turn():
    llama3_instruct = make_tokenizer(LLAMA3, "<s>", "<|eot_id|>", adds_bos=True)
    text = format_text(MESSAGES, "Bye.", "chat", llama3_instruct)
    assert text == (L3_USER_HI + L3_ASSISTANT + "Hello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nBye?"
                    "<|eot_id|>" + L3_ASSISTANT + "Bye.<|eot_id|>")
    ids = llama3_instruct(text)["input_ids"]
    assert ids[0] == llama3_instruct.bos_token_id and ids.count(llama3_instruct.bos_token_id) == 1
    assert ids.count(llama3_instruct.eos_token_id) == 4 and ids[-1] == llama3_instruct.eos_token_id
    # the ids idiom: the template's own text tokenized without added specials gives the same ids
    assert llama3_instruct.apply_chat_template(MESSAGES + [{"role": "assistant", "content": "Bye."}],
                                               tokenize=False) == "<s>" + text


def test_bos_is_kept_when_the_tokenizer_does_not_add_one():
    tokenizer = make_tokenizer(LLAMA3, "<s>", "</s>", adds_bos=False)
    assert format_prompt("Hi?", "chat", tokenizer) == "<s>" + L3_USER_HI + L3_ASSISTANT
    ids = tokenizer(format_text("Hi?", "Hello.", "chat", tokenizer))["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1


def test_opt_like_bos_equal_to_eos_is_not_doubled():
    opt = make_tokenizer(EOS_TURNS, "</s>", "</s>", adds_bos=True)
    assert format_prompt(MESSAGES, "chat", opt) == "[user] Hi?</s>[assistant] Hello!</s>[user] Bye?</s>[assistant]"
    text = format_text(MESSAGES, "Bye.", "chat", opt)
    assert text == "[user] Hi?</s>[assistant] Hello!</s>[user] Bye?</s>[assistant] Bye.</s>"
    ids = opt(text)["input_ids"]
    assert ids[0] == opt.bos_token_id and ids.count(opt.eos_token_id) == 5  # the BOS and four turn ends


def test_chat_prompt_is_a_prefix_of_the_text(llama3, chatml):
    for tokenizer in (llama3, chatml):
        for prompt in ("Hi?", TRANSCRIPT, MESSAGES, SYSTEM):
            assert format_text(prompt, "Sure.", "chat", tokenizer).startswith(format_prompt(prompt, "chat", tokenizer))


def test_chat_template_that_rewrites_the_prompt_is_refused():
    tokenizer = make_tokenizer("{% if messages[-1]['role'] == 'assistant' %}[full]{% endif %}" + CHATML,
                               None, "<|im_end|>", adds_bos=False)
    with pytest.raises(UserError, match="prompt text is not the start of the full text"):
        format_text("Hi?", "Hello.", "chat", tokenizer)


def test_chat_needs_a_tokenizer_with_a_chat_template():
    with pytest.raises(UserError, match="^--template chat needs a tokenizer with a chat template; none was given"):
        format_prompt("Hi?", "chat")
    for template in (None, ""):
        with pytest.raises(UserError, match="^--template chat needs a tokenizer with a chat template; .* has none"):
            format_text("Hi?", "Hello.", "chat", make_tokenizer(template, "<s>", "</s>", adds_bos=True))


def test_malformed_prompts_are_user_errors(chatml):
    with pytest.raises(UserError, match="last message is an assistant turn"):
        format_prompt(MESSAGES[:2], "lmflow")
    with pytest.raises(UserError, match="last message is an assistant turn"):
        format_prompt("\n\nHuman: Hi?\n\nAssistant: Sure,", "chat", chatml)
    for bad in ([], [{"role": "bot", "content": "Hi?"}], [{"role": "user"}]):
        with pytest.raises(UserError, match="non-empty list"):
            format_prompt(bad, "dschat")
    refusing = make_tokenizer("{{ raise_exception('roles must alternate') }}", None, "<|im_end|>", adds_bos=False)
    with pytest.raises(UserError, match="refused a prompt: roles must alternate"):
        format_prompt("Hi?", "chat", refusing)
