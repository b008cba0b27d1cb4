"""Step 3's --algo grpo end to end on the tiny actor, with checkable rewards and no reward model: a user's own reward
function is raised, the groups with one reward are dropped and counted, --ppo_epochs passes take the ratio against
the sampling log-probs, and math_answer's accuracy reaches the evaluation. (Its maths: tests/test_grpo_losses.py.)"""
import json

import pytest

from conftest import STEP3, main_exits, read_metrics, rlhf_args, run_step3
from utils.objectives.intervals import mean_interval, share_interval
from utils.flags import parse_flags

LETTERS = "def letter_e(prompts, answers, **columns):\n    return [float(a.count('e')) for a in answers]\n"


def _grpo_args(actor_dir, out, *extra):
    """rlhf_args without a reward model."""
    args = [str(a) for a in rlhf_args(actor_dir, "unused", out, "--algo", "grpo", *extra)]
    at = args.index("--critic_model_name_or_path")
    return args[:at] + args[at + 2:]


def _train(out):
    return [m for m in read_metrics(out) if m["split"] == "train"]


def test_grpo_raises_a_users_reward_function_without_a_reward_model(actor_dir, tmp_path):
    (tmp_path / "letters.py").write_text(LETTERS)
    out = tmp_path / "grpo"
    run_step3(_grpo_args(actor_dir, out, "--reward_funcs", f"{tmp_path / 'letters.py'}:letter_e"))
    train = _train(out)
    assert len(train) == 50  # 200 prompts, 4 a step
    rewards = [m["reward_letter_e"] for m in train]
    assert sum(rewards[-10:]) / 10 > sum(rewards[:10]) / 10 + 2, rewards
    assert train[0]["clip_region"] == 0.0, "one pass: the ratio to the sampling policy is exactly 1"
    assert {"kl", "kl_k3", "zero_variance_share", "full_marks_letter_e", "clip_low", "clip_high"} <= train[0].keys()
    final = json.loads((out / "eval_results.json").read_text())
    assert final["reward_letter_e"] > final["reward_before"]
    card = (out / "README.md").read_text()
    assert "| reward model | none |" in card and "grpo (dapo loss, group scaling), K = 4" in card


def test_zero_variance_groups_are_dropped_and_counted_and_accuracy_is_evaluated(actor_dir, tmp_path):
    """The tiny actor seldom answers a sum right: most groups' K rewards are all 0. Their advantages are 0 and so
    are their gradients, so both runs keep the same weights up to the first step with a group that is not flat;
    there the filtered loss leaves the flat groups' tokens out of its denominator and is larger (planted: counting
    them anyway gives the same loss)."""
    runs = {}
    for name, extra in (("kept", []), ("dropped", ["--filter_zero_variance_groups"])):
        out = tmp_path / name
        run_step3(_grpo_args(actor_dir, out, "--data_path", "synthetic_math:40", "--max_prompt_seq_len", 64,
                             "--reward_funcs", "math_answer", *extra))
        runs[name] = _train(out)
    kept, dropped = runs["kept"], runs["dropped"]
    assert [m["groups_dropped"] for m in dropped] == [4 * m["zero_variance_share"] for m in dropped]
    assert all(m["groups_dropped"] == 0 for m in kept) and sum(m["groups_dropped"] for m in dropped) >= 30
    assert all(m["loss"] == 0.0 for m in dropped if m["groups_dropped"] == 4)
    first = next(i for i, m in enumerate(kept) if m["zero_variance_share"] < 1)
    assert dropped[first]["zero_variance_share"] == kept[first]["zero_variance_share"] > 0, "same samples so far"
    assert abs(dropped[first]["loss"]) > 1.5 * abs(kept[first]["loss"]) > 0
    final = json.loads((tmp_path / "dropped" / "eval_results.json").read_text())
    assert final["accuracy_after"] == final["accuracy"] == final["full_marks_math_answer"]
    assert 0 <= final["accuracy_before"] <= 1 and {"greedy_accuracy_before", "greedy_accuracy_after"} <= final.keys()
    samples = [json.loads(line) for line in (tmp_path / "dropped" / "samples.jsonl").read_text().splitlines()]
    assert all(s["reward_math_answer"] in (0.0, 1.0) and s["greedy_reward_math_answer"] in (0.0, 1.0)
               for s in samples)
    # each figure's 95% interval, before and after, from the same answers as the figure
    last = [s for s in samples if s["step"] == max(s["step"] for s in samples)]
    n, right = len(last), sum(s["reward_math_answer"] for s in last)
    assert final["ci95"]["accuracy"] == [round(v, 4) for v in share_interval(int(right), n)]
    assert final["ci95"]["answer_length"] == [round(v, 4) for v in mean_interval([s["length"] for s in last])]
    for when in ("ci95", "ci95_before"):
        assert final[when].keys() == {"accuracy", "greedy_accuracy", "eos_share", "answer_length", "kl_to_reference"}
    assert final["ci95"]["kl_to_reference"][0] <= final["kl_to_reference"] <= final["ci95"]["kl_to_reference"][1]


@pytest.mark.parametrize("updates, epoch_of_update", [(("--ppo_epochs", 2), [0, 1, 0, 1]),
                                                     (("--generation_batches", 2), [0, 0, 0, 0])])
def test_later_updates_take_the_ratio_against_the_sampling_policy(actor_dir, tmp_path, updates, epoch_of_update):
    """Two updates per sampling, by two passes over each rollout or one pass over two rollouts: the first update is
    on-policy (ratio 1, nothing clipped), the second starts from weights one update away, so its ratios leave the
    clip range somewhere (planted: old log-probs recomputed at each update, or taken only with --ppo_epochs > 1,
    keep the ratio at 1 and clip_region at 0)."""
    (tmp_path / "letters.py").write_text(LETTERS)
    out = tmp_path / "updates"
    run_step3(_grpo_args(actor_dir, out, "--reward_funcs", f"{tmp_path / 'letters.py'}:letter_e", "--data_path",
                         "synthetic:40", *updates, "--cliprange", 0.05, "--kl_ctl", 0.1))
    train = _train(out)
    assert [m["ppo_epoch"] for m in train[:4]] == epoch_of_update
    assert all(m["clip_region"] == 0 for m in train[::2])
    assert any(m["clip_region"] > 0 for m in train[1::2])


@pytest.mark.parametrize("extra, message", [
    (["--num_generations", 1], "GRPO's advantage is a reward against the other answers"),
    (["--cliprange", 0.2, "--cliprange_high", 0.1], "cliprange_high >= cliprange"),
    (["--kl_ctl", -1], "--kl_ctl -1.0: the weight of the KL in the loss is 0 or more"),
])
def test_grpo_flag_mistakes(actor_dir, tmp_path, extra, message, monkeypatch, capsys):
    code, _, stderr = main_exits(STEP3, _grpo_args(actor_dir, tmp_path / "o", "--reward_funcs", "flaw", *extra),
                                 monkeypatch, capsys)
    assert code == 2 and message in stderr, stderr


def test_grpo_defaults_follow_trl_unless_given(actor_dir, tmp_path):
    args, _ = parse_flags(3, _grpo_args(actor_dir, tmp_path, "--reward_funcs", "flaw"))
    assert (args.kl_ctl, args.loss_type, args.scale_rewards, args.cliprange_high) == (0.0, "dapo", "group", 0.2)
    args, _ = parse_flags(3, _grpo_args(actor_dir, tmp_path, "--reward_funcs", "flaw", "--kl_ctl", 0.04))
    assert args.kl_ctl == 0.04
    args, _ = parse_flags(3, _grpo_args(actor_dir, tmp_path, "--reward_funcs", "flaw", "--algo", "rloo"))
    assert args.kl_ctl == 0.1, "RLOO keeps its own default"


@pytest.mark.parametrize("hits, n, expected", [(0, 10, [0.0, 0.2775]), (5, 10, [0.2366, 0.7634]),
                                               (10, 10, [0.7225, 1.0])])
def test_a_share_gets_wilsons_interval(hits, n, expected):
    # hand-computed: centre (p + z^2/2n) / (1 + z^2/n), half z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n); the normal
    # interval p +- z se would give [0, 0] at 0 of 10 (the bug this catches)
    assert [round(v, 4) for v in share_interval(hits, n)] == expected


def test_a_mean_gets_the_normal_interval():
    # 1, 2, 3: mean 2, sample sd 1, so 2 -+ 1.96 / sqrt(3) (the population sd would give 1.6 -+ ...)
    assert [round(v, 4) for v in mean_interval([1.0, 2.0, 3.0])] == [0.8684, 3.1316]
    assert mean_interval([4.0]) == [4.0, 4.0]

