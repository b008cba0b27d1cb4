"""Both losses and the metrics against values computed by hand."""
import math

import pytest
import torch

from utils.objectives.losses import bt_loss, dschat_loss
from utils.objectives.metrics import pair_metrics


def _nls(x: float) -> float:  # -log(sigmoid(x))
    return math.log1p(math.exp(-x))


def test_bt_loss_matches_hand_computation():
    """Unequal margins (2, -1, 0.5), so that swapping chosen and rejected changes the loss (planted: return
    -logsigmoid(rejected - chosen), and the loss is 1.1381)."""
    chosen, rejected = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([0.0, 1.5, -1.5])
    # log(1 + e^-2) = 0.12693, log(1 + e) = 1.31326, log(1 + e^-0.5) = 0.47408
    assert bt_loss(chosen, rejected).item() == pytest.approx((0.12693 + 1.31326 + 0.47408) / 3, abs=1e-5)


def test_dschat_loss_averages_from_divergence_to_later_end():
    # pair 0: ids diverge at index 2; chosen scored at 3, rejected at 4 -> tokens 2..4
    # pair 1: identical ids -> the last position only
    ids = torch.tensor([[1, 5, 6, 7, 0, 0],
                        [1, 5, 6, 7, 8, 0],
                        [1, 5, 9, 9, 9, 0],
                        [1, 5, 6, 7, 8, 0]])
    values = torch.tensor([[0.0, 0.1, 0.2, 0.3, 0.4, 0.5],
                           [0.0, 0.0, 0.0, 0.0, 0.0, 2.0],
                           [0.0, 0.1, 1.2, -0.7, 0.9, 0.5],
                           [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]])
    positions = torch.tensor([3, 4, 4, 4])
    pair0 = (_nls(0.2 - 1.2) + _nls(0.3 + 0.7) + _nls(0.4 - 0.9)) / 3
    pair1 = _nls(2.0 - 1.0)
    assert dschat_loss(values, ids, positions).item() == pytest.approx((pair0 + pair1) / 2, abs=1e-6)


def test_metrics_count_ties_as_wrong():
    m = pair_metrics(torch.tensor([2.0, 1.0, 0.5, 3.0]), torch.tensor([1.0, 1.0, 1.0, -1.0]))
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["chosen_mean"] == pytest.approx(1.625)
    assert m["rejected_mean"] == pytest.approx(0.5)
    assert m["chosen_std"] == pytest.approx(0.921875 ** 0.5) and m["rejected_std"] == pytest.approx(0.75 ** 0.5)
    assert m["margin_mean"] == pytest.approx(1.125)
    rewards = torch.tensor([2.0, 1.0, 0.5, 3.0, 1.0, 1.0, 1.0, -1.0], dtype=torch.float64)
    assert m["reward_mean"] == pytest.approx(rewards.mean().item())
    assert m["reward_std"] == pytest.approx(rewards.std(unbiased=False).item())
    assert m["loss"] == pytest.approx((_nls(1) + _nls(0) + _nls(-0.5) + _nls(4)) / 4)
    assert m["pairs"] == 4
