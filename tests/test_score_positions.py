"""Where the reward is read: DESIGN.md §3, for OPT-like and Llama-like token layouts."""
import torch

from utils.models.reward_model import score_positions

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
