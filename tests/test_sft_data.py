"""Step 1's labels (prompt masking, padding, packing borders) and its perplexity, against hand-built expectations."""
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from utils.data.encoding import IGNORE, collate_sft, encode_sft, pack_blocks
from utils.engine.loop import eval_loader
from utils.data.formatting import format_prompt, format_text
from utils.models.loading import load_causal_lm, load_tokenizer
from utils.objectives.sft import SFTObjective

ROWS = [{"prompt": "What is the capital of France?", "chosen": "The capital of France is Paris."},
        {"prompt": "What color is snow?", "chosen": "Snow is white."},
        {"prompt": "How many legs does a spider have?", "chosen": "Eight."}]


@pytest.fixture(scope="module")
def tokenizer(opt_dir):
    return load_tokenizer(str(opt_dir), "end", append_eos=False)


def _hand_built(tokenizer, row):
    """BOS + prompt + answer + EOS as ids, and how many of them belong to the prompt (BOS included)."""
    text = format_text(row["prompt"], row["chosen"], "dschat")
    ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    prompt_len = len(tokenizer(format_prompt(row["prompt"], "dschat"))["input_ids"])
    return ids, prompt_len


def test_prompt_tokens_are_masked_and_eos_is_learned(tokenizer):
    texts, report = encode_sft(ROWS, tokenizer, "dschat", 512, "truncate", train_on_prompt=False)
    assert report.kept == 3 and report.truncated == report.dropped == 0
    for row, text in zip(ROWS, texts):
        ids, prompt_len = _hand_built(tokenizer, row)
        assert text["input_ids"] == ids
        assert text["labels"] == [IGNORE] * prompt_len + ids[prompt_len:]
        assert text["labels"][-1] == tokenizer.eos_token_id and ids.count(tokenizer.eos_token_id) == 2  # BOS, EOS


def test_train_on_prompt_labels_every_token(tokenizer):
    texts, _ = encode_sft(ROWS, tokenizer, "dschat", 512, "truncate", train_on_prompt=True)
    assert all(t["labels"] == t["input_ids"] for t in texts)


def test_add_eot_token_ends_every_text_with_one_new_id(opt_dir):
    tok = load_tokenizer(str(opt_dir), "end", append_eos=False, eot_token="<|endoftext|>")
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    assert tok.eos_token_id == eot and tok("Hi<|endoftext|>")["input_ids"][-1] == eot  # one id, not pieces
    texts, _ = encode_sft(ROWS[:1], tok, "dschat", 512, "truncate", train_on_prompt=False)
    assert texts[0]["input_ids"][-1] == texts[0]["labels"][-1] == eot
    model = load_causal_lm(str(opt_dir), tok, None, False)
    assert model.get_input_embeddings().num_embeddings >= len(tok) > eot
    assert model.generation_config.eos_token_id == eot  # generation stops where training texts ended


def test_overlong_texts_lose_prompt_tokens_but_keep_the_answer(tokenizer):
    row = ROWS[0] | {"prompt": "Please tell me, " * 20 + ROWS[0]["prompt"]}
    full, _ = encode_sft([row], tokenizer, "dschat", None, "truncate", train_on_prompt=False)
    cut, report = encode_sft([row], tokenizer, "dschat", 24, "truncate", train_on_prompt=False)
    assert report.truncated == 1 and len(cut[0]["input_ids"]) == 24
    kept = 24 - 1  # after the BOS
    assert cut[0]["input_ids"] == full[0]["input_ids"][:1] + full[0]["input_ids"][-kept:]
    assert cut[0]["labels"] == full[0]["labels"][:1] + full[0]["labels"][-kept:]
    dropped, report = encode_sft([row], tokenizer, "dschat", 24, "drop", train_on_prompt=False)
    assert dropped == [] and report.dropped == 1


def test_padding_is_never_a_label():
    batch = collate_sft([{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]},
                         {"input_ids": [5, 8], "labels": [IGNORE, 8]}], pad_id=1)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 8, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [IGNORE, 8, IGNORE]]


def test_packing_cuts_blocks_and_keeps_each_tokens_label():
    texts = [{"input_ids": [2, 10, 11, 12, 2], "labels": [IGNORE, IGNORE, 11, 12, 2]},
             {"input_ids": [2, 20, 21, 2], "labels": [IGNORE, IGNORE, 21, 2]}]
    blocks = pack_blocks(texts, block_size=4)
    assert [b["input_ids"] for b in blocks] == [[2, 10, 11, 12], [2, 2, 20, 21], [2]]
    assert [b["labels"] for b in blocks] == [[IGNORE, IGNORE, 11, 12], [2, IGNORE, IGNORE, 21], [2]]


def test_packed_real_texts_keep_prompts_masked(tokenizer):
    texts, _ = encode_sft(ROWS, tokenizer, "dschat", None, "truncate", train_on_prompt=False)
    blocks = pack_blocks(texts, block_size=7)
    flat_ids = [t for b in blocks for t in b["input_ids"]]
    flat_labels = [t for b in blocks for t in b["labels"]]
    assert flat_ids == [t for x in texts for t in x["input_ids"]]
    assert flat_labels == [t for x in texts for t in x["labels"]]
    assert all(len(b["input_ids"]) == 7 for b in blocks[:-1]) and 0 < len(blocks[-1]["input_ids"]) <= 7


def test_perplexity_matches_a_hand_computation(opt_dir, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(opt_dir).eval()
    texts, _ = encode_sft(ROWS, tokenizer, "dschat", 512, "truncate", train_on_prompt=False)
    loader = eval_loader(texts, batch_size=2, collate=lambda b: collate_sft(b, tokenizer.pad_token_id))
    with torch.no_grad():
        ours = SFTObjective().evaluate(model, loader, max_batches=100)

        nll, count = 0.0, 0
        for row in ROWS:  # one unpadded text at a time: answer tokens and EOS, each given everything before it
            ids, prompt_len = _hand_built(tokenizer, row)
            logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
            for pos in range(prompt_len, len(ids)):
                nll -= logprobs[pos - 1, ids[pos]].item()
                count += 1
    assert ours["tokens"] == count
    assert ours["loss"] == pytest.approx(nll / count, rel=1e-5)
    assert ours["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-5)
