"""benchmarks/grpo_bench.py's figures, on made-up child results (the benchmark itself runs by `make bench-grpo`,
never here): the accuracy gains and their standard errors by hand, the speed-ups, and a held-out set that no
trainer, step 1 included, ever sees."""
import math
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import grpo_bench  # noqa: E402

BEFORE = [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]  # 2 of 10 right
AFTER = [1, 0, 1, 1, 1, 0, 0, 0, 0, 0]  # 4 of 10: 3 newly right, 1 lost


def test_gain_and_its_standard_errors_by_hand():
    """SE = sqrt(0.4 * 0.6 / 10 + 0.2 * 0.8 / 10) = sqrt(0.04) = 0.2; paired, with 3 problems right only after and 1
    only before: sqrt(3 + 1 - 2 ** 2 / 10) / 10 = sqrt(3.6) / 10 (catches before and after swapped, or n for n - 1)."""
    figures = grpo_bench.gain(BEFORE, AFTER)
    assert figures["right_before"] == 2 and figures["right_after"] == 4
    assert figures["gain"] == 0.2 and figures["standard_error"] == 0.2
    assert (figures["right_after_only"], figures["right_before_only"]) == (3, 1)
    assert figures["paired_standard_error"] == round(math.sqrt(3.6) / 10, 4)


def test_report_on_fake_child_results():
    """prompts/s over the training loop's seconds, the rest of the split, each of our columns against TRL's, and
    ours - TRL's final accuracy in standard errors: (0.4 - 0.2) / sqrt(0.4 * 0.6 / 10 + 0.2 * 0.8 / 10) = 1."""
    def run(seconds: float, rewards: list[float]) -> dict:
        return {"train_s": seconds, "split_s": {"generate": seconds / 2, "score": 1.0}, "generated_tokens": 800,
                "train_rewards": rewards}

    runs = {name: grpo_bench.add_rates(run(seconds, [0.0, 0.5, 0.5, 1.0]), 40)
            for name, seconds in (("ours", 10.0), ("unshared", 20.0), ("trl", 16.0))}
    assert [runs[name]["prompts_per_s"] for name in runs] == [4.0, 2.0, 2.5]
    assert runs["ours"]["split_s"]["rest"] == 4.0 and runs["ours"]["split_share"]["score"] == 0.1
    assert runs["ours"]["train_reward_first_quarter"] == 0.0 and runs["ours"]["train_reward_last_quarter"] == 1.0
    assert grpo_bench.speedups(runs) == {"ours": 1.6, "unshared": 0.8}

    def answers(right: list[int]) -> dict:
        return {"sampled": right, "greedy": right, "sampled_answer_tokens": 7.0, "greedy_answer_tokens": 6.5}

    report = grpo_bench.accuracy_report(answers(BEFORE), {"ours": answers(AFTER), "unshared": answers(AFTER),
                                                          "trl": answers(BEFORE)})
    assert report["problems"] == 10 and report["before"]["greedy"] == {"right": 2, "accuracy": 0.2,
                                                                       "answer_tokens": 6.5}
    assert report["trainers"]["ours"]["sampled"]["gain"] == 0.2 and report["trainers"]["trl"]["greedy"]["gain"] == 0
    assert report["ours_minus_trl_in_standard_errors"] == {"sampled": 1.0, "greedy": 1.0}


def test_held_out_problems_are_never_trained_on():
    """Neither GRPO's problems nor step 1's questions include a held-out prompt, and each set has the size asked."""
    args = grpo_bench.parse_args(["--steps", "6", "--prompts_per_step", "4", "--eval_prompts", "60",
                                  "--sft_rows", "80"])
    train, held_out = grpo_bench.split_problems(args)
    held = {row["prompt"] for row in held_out}
    assert len(train) == 24 and len(held) == len(held_out) == 60
    assert not held & {row["prompt"] for row in train}
    assert all(row["answer"] for row in held_out)
    sft, left_out = grpo_bench.sft_rows(held_out, args)
    assert len(sft) == 80 and not held & {row["prompt"] for row in sft}
    assert all(grpo_bench.BARE_SUM.fullmatch(row["prompt"]) for row in sft)
