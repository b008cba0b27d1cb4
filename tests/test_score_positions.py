"""Where the reward is read (docs/reward-scores.md), for OPT-like and Llama-like token layouts, and every path that
reads it agreeing with the one rule."""
import pytest
import torch

from utils.data.encoding import collate_pairs, encode_pairs
from utils.data.synthetic import generate_pairs
from utils.models.loading import leading_eos_count, load_reward_model, load_tokenizer
from utils.models.reward_model import RewardModel, score_positions
from utils.models.shared_prompt import collate_shared_prompt

PAD = 2  # first_pad: pad == EOS == 2; OPT's BOS is also 2


def _mask(ids, pad_after):
    return torch.tensor([[1] * n + [0] * (len(row) - n) for row, n in zip(ids, pad_after)])


def test_end_right_padding_reads_last_attended_token():
    ids = torch.tensor([[5, 6, 7, 9, 0, 0], [5, 6, 7, 8, 9, 9]])
    mask = _mask(ids.tolist(), [4, 6])
    assert score_positions(ids, mask, "end", PAD, 0).tolist() == [3, 5]


def test_end_left_padding_reads_last_position():
    ids = torch.tensor([[0, 0, 5, 6, 7, 9], [5, 6, 7, 8, 9, 9]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    assert score_positions(ids, mask, "end", PAD, 0).tolist() == [5, 5]


def test_first_pad_opt_like_skips_bos_that_equals_pad():
    # </s>=2 is BOS, EOS and pad: [BOS, a, b, EOS, pad, pad] -> score at b (index 2)
    ids = torch.tensor([[2, 11, 12, 2, 2, 2], [2, 11, 12, 13, 14, 2]])
    mask = torch.ones_like(ids)
    assert score_positions(ids, mask, "first_pad", PAD, 1).tolist() == [2, 4]


def test_first_pad_llama_like_has_no_leading_pad():
    # BOS 1 differs from pad/EOS 2
    ids = torch.tensor([[1, 11, 12, 2, 2, 2], [1, 11, 12, 13, 2, 2]])
    mask = torch.ones_like(ids)
    assert score_positions(ids, mask, "first_pad", PAD, 0).tolist() == [2, 3]


def test_first_pad_truncated_row_without_pad_reads_last_position():
    ids = torch.tensor([[2, 11, 12, 13, 14, 15], [1, 11, 12, 13, 14, 15]])
    mask = torch.ones_like(ids)
    assert score_positions(ids, mask, "first_pad", PAD, 1).tolist() == [5, 5]
    assert score_positions(ids[1:], mask[1:], "first_pad", PAD, 0).tolist() == [5]


def test_end_truncated_row_reads_last_position():
    ids = torch.tensor([[5, 6, 7, 8]])
    assert score_positions(ids, torch.ones_like(ids), "end", PAD, 0).tolist() == [3]


@pytest.mark.parametrize("family", ["opt", "llama"])
@pytest.mark.parametrize("score_token", ["end", "first_pad"])
def test_every_scoring_path_reads_the_rules_token(family, score_token, opt_dir, llama_dir):
    """The trainer (score_positions), shared-prompt rows and the exported model's own pooling, which pipeline()
    runs, give the same scores on right-padded batches: change the rule in one place and this names the path that
    disagrees."""
    model_dir = str(opt_dir if family == "opt" else llama_dir)
    tokenizer = load_tokenizer(model_dir, score_token, append_eos=True)
    num_padding = leading_eos_count(tokenizer) if score_token == "first_pad" else 0
    model = load_reward_model(model_dir, tokenizer, dropout=0.0, gradient_checkpointing=False).eval()
    pairs = encode_pairs(generate_pairs(6, seed=3), tokenizer, "dschat", 512, "truncate")[0]
    batch = collate_pairs(pairs, tokenizer.pad_token_id)
    assert len({len(p["chosen"]) for p in pairs} | {len(p["rejected"]) for p in pairs}) > 1  # rows are padded
    with torch.no_grad():
        values = RewardModel(model)(batch["input_ids"], batch["attention_mask"])
        positions = score_positions(batch["input_ids"], batch["attention_mask"], score_token, tokenizer.pad_token_id,
                                    num_padding)
        trainer = values.gather(1, positions[:, None]).squeeze(1)
        pooled = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
        assert torch.allclose(pooled, trainer, atol=1e-5), "the model's own pooling (pipeline) disagrees"
        if score_token == "end":  # shared-prompt rows serve the end rule only
            rows = collate_shared_prompt(pairs, tokenizer.pad_token_id)
            shared = RewardModel(model)(rows["input_ids"], rows["attention_mask"], rows["position_ids"])
            assert torch.allclose(shared.gather(1, rows["score_index"]).T.reshape(-1), trainer, atol=1e-5), \
                "shared-prompt rows disagree"
