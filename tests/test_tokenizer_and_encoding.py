"""Pad and EOS rules (docs/reward-scores.md), the --num_padding_at_beginning check, over-length handling and padding."""
import pytest

from utils.data.encoding import collate_pairs, encode_pairs
from utils.data.formatting import format_text
from utils.errors import UserError
from utils.models.loading import DEDICATED_PAD, load_tokenizer, resolve_num_padding

ROW = {"prompt": "What is the capital of France?", "chosen": "The capital of France is Paris.",
       "rejected": "I don't know."}


def test_opt_like_end_mode_keeps_its_pad_and_appends_eos(opt_dir):
    tok = load_tokenizer(str(opt_dir), "end", append_eos=True)
    ids = tok(format_text(ROW["prompt"], ROW["chosen"], "dschat"))["input_ids"]
    assert tok.pad_token == "<pad>" and tok.pad_token_id != tok.eos_token_id
    assert ids[0] == tok.eos_token_id  # OPT's BOS is </s>
    assert ids[-1] == tok.eos_token_id and ids.count(tok.eos_token_id) == 2


def test_llama_like_end_mode_gets_a_dedicated_pad(llama_dir):
    tok = load_tokenizer(str(llama_dir), "end", append_eos=True)
    assert tok.pad_token is not None and tok.pad_token_id not in (tok.eos_token_id, tok.bos_token_id)
    ids = tok("hello")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id


def test_gpt2_like_pad_that_is_the_eos_is_replaced_in_end_mode(gpt2_dir):
    """Pad == EOS would hide the scored EOS from the model's own pooling (planted: drop the pad == EOS clause of
    use_dedicated_pad)."""
    tok = load_tokenizer(str(gpt2_dir), "end", append_eos=True)
    assert tok.pad_token == DEDICATED_PAD and tok.pad_token_id != tok.eos_token_id
    ids = tok("hello")["input_ids"]
    assert ids[-1] == tok.eos_token_id and ids.count(tok.eos_token_id) == 1  # no BOS before the text


def test_first_pad_sets_pad_to_eos(opt_dir, llama_dir):
    for path in (opt_dir, llama_dir):
        tok = load_tokenizer(str(path), "first_pad", append_eos=True)
        assert tok.pad_token_id == tok.eos_token_id


def test_num_padding_at_beginning_is_checked(opt_dir, llama_dir):
    opt = load_tokenizer(str(opt_dir), "first_pad", append_eos=True)
    llama = load_tokenizer(str(llama_dir), "first_pad", append_eos=True)
    assert resolve_num_padding(opt, None, "first_pad", "opt", "dschat") == 1
    assert resolve_num_padding(llama, 0, "first_pad", "llama", "dschat") == 0
    with pytest.raises(UserError, match="set --num_padding_at_beginning 1"):
        resolve_num_padding(opt, 0, "first_pad", "opt", "dschat")
    with pytest.raises(UserError, match="set --num_padding_at_beginning 0"):
        resolve_num_padding(llama, 1, "first_pad", "llama", "dschat")
    with pytest.warns(UserWarning, match="set --num_padding_at_beginning 0"):
        assert resolve_num_padding(llama, 1, "end", "llama", "dschat") == 0
    with pytest.raises(UserError, match="use --score_token end with --template chat"):
        resolve_num_padding(llama, 0, "first_pad", "llama", "chat")


def test_truncation_cuts_the_prompt_from_the_left_and_keeps_answers(opt_dir):
    tok = load_tokenizer(str(opt_dir), "end", append_eos=True)
    long_row = ROW | {"prompt": "Please tell me, " * 30 + ROW["prompt"]}
    full, _ = encode_pairs([long_row], tok, "dschat", 4096, "truncate")
    cut, report = encode_pairs([long_row], tok, "dschat", 48, "truncate")
    assert report.truncated == 1 and report.dropped == 0
    chosen, full_chosen = cut[0]["chosen"], full[0]["chosen"]
    assert max(len(cut[0]["chosen"]), len(cut[0]["rejected"])) == 48
    assert chosen[0] == full_chosen[0]  # BOS kept
    assert chosen[1:] == full_chosen[len(full_chosen) - len(chosen) + 1:]  # the tail, answer and EOS, is whole
    assert cut[0]["rejected"][-1] == tok.eos_token_id


def test_drop_and_unfittable_pairs_are_counted(opt_dir):
    tok = load_tokenizer(str(opt_dir), "end", append_eos=True)
    long_row = ROW | {"prompt": "Please tell me, " * 30 + ROW["prompt"]}
    kept, report = encode_pairs([ROW, long_row], tok, "dschat", 48, "drop")
    assert len(kept) == 1 and report.dropped == 1
    kept, report = encode_pairs([ROW], tok, "dschat", 4, "truncate")  # the answers alone do not fit
    assert kept == [] and report.dropped == 1


def test_batches_pad_to_their_longest_sequence_only():
    pairs = [{"chosen": [1, 2, 3], "rejected": [1, 4]}, {"chosen": [1, 5], "rejected": [1, 6, 7, 8]}]
    batch = collate_pairs(pairs, pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 0], [1, 5, 0, 0], [1, 4, 0, 0], [1, 6, 7, 8]]
    assert batch["attention_mask"].sum(1).tolist() == [3, 2, 2, 4]


def test_templates_wrap_questions_and_keep_transcript_turns():
    assert format_text("Hi?", "Hello.", "dschat") == " Human: Hi? Assistant: Hello."
    assert format_text("Hi?", "Hello.", "lmflow") == "###Human: Hi?###Assistant: Hello."
    transcript = "\n\nHuman: Hi?\n\nAssistant: Hello!\n\nHuman: Bye?\n\nAssistant:"
    assert format_text(transcript, " Bye.", "dschat") == transcript + " Bye."
    assert format_text(transcript, " Bye.", "lmflow") == "###Human: Hi?###Assistant: Hello!###Human: Bye?###Assistant: Bye."
