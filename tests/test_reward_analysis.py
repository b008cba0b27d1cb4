"""rw_eval.py's figures against hand-computed values on constructed scores, and normalization round trips."""
import math

import pytest
import torch
from transformers import OPTConfig

from utils.evaluation.reward_analysis import (accuracy_by_length, balance, calibration, extremes, longer_answer_wins,
                                   normalization, normalize)
from utils.evaluation.reward_report import NORMALIZATION_KEY, write_normalization


def test_calibration_counts_each_pair_in_both_orders():
    chosen = torch.tensor([0.0, 1.0, math.log(3), 0.0])
    rejected = torch.tensor([0.0, 1.0, 0.0, math.log(3)])  # margins 0, 0, log 3, -log 3
    result = calibration(chosen, rejected)
    bins = {b["bin"]: b for b in result["bins"]}
    assert set(bins) == {"0.2-0.3", "0.5-0.6", "0.7-0.8"}
    assert bins["0.5-0.6"] == {"bin": "0.5-0.6", "count": 4, "predicted": 0.5, "observed": 0.5}
    assert bins["0.7-0.8"]["count"] == 2 and bins["0.7-0.8"]["predicted"] == pytest.approx(0.75)
    assert bins["0.7-0.8"]["observed"] == 0.5 and bins["0.2-0.3"]["observed"] == 0.5
    assert result["ece"] == pytest.approx((4 * 0 + 2 * 0.25 + 2 * 0.25) / 8)


def test_accuracy_by_length_buckets_and_the_length_baseline():
    chosen, rejected = torch.tensor([1.0, 0.0, 2.0, 3.0]), torch.tensor([0.0, 0.0, 1.0, 1.0])  # the tie is wrong
    buckets = accuracy_by_length(chosen, rejected, [10, 40, 20, 30], buckets=2)
    assert buckets == [{"tokens": "10-20", "pairs": 2, "accuracy": 1.0}, {"tokens": "30-40", "pairs": 2, "accuracy": 0.5}]
    assert longer_answer_wins([5, 3, 4], [4, 3, 9]) == pytest.approx(1 / 3)


def test_balance_and_extremes():
    assert balance(torch.tensor([3.0, 2.0]), torch.tensor([1.0, 0.0])) == {
        "median": 1.0, "chosen_above_median": 1.0, "rejected_below_median": 0.5}
    top = extremes([0.5, -2.0, 3.0, 1.0], ["a", "b", "c", "d"], k=2)
    assert top == {"top": [{"score": 3.0, "text": "c"}, {"score": 1.0, "text": "d"}],
                   "bottom": [{"score": -2.0, "text": "b"}, {"score": 0.5, "text": "a"}]}


def test_normalization_round_trip(tmp_path):
    scores = [-3.0, -1.0, 0.0, 2.0, 7.0]
    constants = normalization(scores)
    assert constants == {"mean": 1.0, "std": pytest.approx(math.sqrt(58 / 5)), "min": -3.0, "max": 7.0,
                         "fitted_on": 5}
    normalized = [normalize(s, constants) for s in scores]
    z = torch.tensor([n["z"] for n in normalized], dtype=torch.float64)
    assert z.mean().item() == pytest.approx(0.0, abs=1e-12) and z.std(unbiased=False).item() == pytest.approx(1.0)
    assert [n["minmax"] for n in normalized] == pytest.approx([-1.0, -0.6, -0.4, 0.0, 1.0])

    OPTConfig(num_labels=1).save_pretrained(tmp_path)
    write_normalization(str(tmp_path), constants)
    assert getattr(OPTConfig.from_pretrained(tmp_path), NORMALIZATION_KEY) == constants
