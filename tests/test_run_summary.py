"""The run summary a launcher prints at the end: each step's eval figure before and after, and the loss curves."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import main_exits, run_here, write_jsonl
from utils.evaluation import run_summary, seed_table
from utils.evaluation.run_summary import step_dirs, summary_line


def _step(path: Path, rows: list[dict], final: dict | None) -> Path:
    path.mkdir(parents=True)
    write_jsonl(path / "metrics.jsonl", rows)
    if final is not None:
        (path / "eval_results.json").write_text(json.dumps(final))
    return path


def _train(step: int, loss: float) -> dict:
    return {"split": "train", "step": step, "loss": loss}


def test_summary_lines_and_curves(tmp_path):
    sft = _step(tmp_path / "step1_sft", [{"split": "eval", "step": 0, "loss": 2.0, "perplexity": 7.389},
                                         _train(1, 1.5), _train(2, 1.2),
                                         {"split": "eval", "step": 2, "loss": 1.0, "perplexity": 2.718}],
                {"loss": 1.0, "perplexity": 2.718})
    rm = _step(tmp_path / "step2_reward_model", [{"split": "eval", "step": 0, "loss": 0.7, "accuracy": 0.5},
                                                 _train(1, 0.6), {"split": "eval", "step": 1, "loss": 0.5,
                                                                  "accuracy": 0.625}, _train(2, 0.4)], None)
    dpo = _step(tmp_path / "step3_dpo", [{"split": "eval", "step": 0, "pair_loss": 0.693, "pair_accuracy": 0.0},
                                         _train(1, 0.6), {"split": "eval", "step": 1, "pair_loss": 0.4,
                                                          "pair_accuracy": 0.875}], {"pair_accuracy": 0.875})
    (tmp_path / "logs").mkdir()
    assert step_dirs(tmp_path) == [sft, rm, dpo] and step_dirs(sft) == [sft]
    assert summary_line(sft, [json.loads(l) for l in (sft / "metrics.jsonl").read_text().splitlines()]) == \
        "step1_sft: perplexity 7.389 before training, 2.718 after 2 steps"
    proc = run_here(run_summary, [tmp_path])
    assert proc.stdout.splitlines()[1] == "step2_reward_model: accuracy 0.5 before training, 0.625 at step 1 (unfinished)"
    assert proc.stdout.splitlines()[2] == "step3_dpo: pair_accuracy 0 before training, 0.875 after 1 steps"
    assert (tmp_path / "training_curves.png").stat().st_size > 10_000


def test_summary_of_a_directory_without_runs(tmp_path, monkeypatch, capsys):
    code, _, stderr = main_exits(run_summary, [tmp_path], monkeypatch, capsys)
    assert code == 2 and "holds no metrics.jsonl" in stderr


def _policy(path: Path, before: dict, after: dict) -> Path:
    rows = [{"split": "eval", "step": 0, **before}, {"split": "train", "step": 1, "loss": 0.3, "reward": 5.0},
            {"split": "eval", "step": 1, **after}]
    _step(path, rows, after)
    (path / "eval_before.json").write_text(json.dumps(before))
    return path


def test_step_3_runs_side_by_side(tmp_path):
    """The demo's last lines: a before/RAFT/RLOO table, and step3_rlhf/eval_results.json with each figure."""
    before = {"reward": 4.0, "greedy_reward": 9.0, "kl_to_reference": 0.0, "answer_length": 9.0, "eos_share": 1.0,
              "distinct2": 0.5, "prompts": 128, "flawed_share": 0.25}
    rloo = before | {"reward": 8.5, "kl_to_reference": 0.75, "flawed_share": 0.0, "distinct2": 0.4, "win_rate": 0.5}
    raft = before | {"reward": 8.0, "kl_to_reference": 1.25, "flawed_share": 0.0625, "eos_share": 0.96875,
                     "win_rate": 0.625}
    _policy(tmp_path / "step3_rlhf" / "rloo", before, rloo)
    _policy(tmp_path / "step3_rlhf" / "raft", before, raft)
    _policy(tmp_path / "step3_rlhf" / "unfinished", before, rloo).joinpath("eval_results.json").unlink()
    proc = run_here(run_summary, [tmp_path])
    lines = proc.stdout.splitlines()
    assert lines[:3] == ["step3_rlhf/raft: reward 4 before training, 8 after 1 steps",
                         "step3_rlhf/rloo: reward 4 before training, 8.5 after 1 steps",
                         "step3_rlhf/unfinished: reward 4 before training, 8.5 at step 1 (unfinished)"]
    table = [line.split() for line in lines[-4:]]
    assert lines[-5].startswith("step3_rlhf, one seeded sample per held-out prompt (128 prompts)")
    assert table[0] == ["policy", "reward", "greedy", "flawed", "KL", "EOS", "length", "distinct-2", "win", "rate"]
    assert table[1] == ["before", "4.00", "9.00", "25.0%", "-", "100%", "9.0", "0.500", "-"]
    assert table[2] == ["RAFT", "8.00", "9.00", "6.2%", "1.250", "97%", "9.0", "0.500", "62%"]
    assert table[3] == ["RLOO", "8.50", "9.00", "0.0%", "0.750", "100%", "9.0", "0.400", "50%"]
    saved = json.loads((tmp_path / "step3_rlhf" / "eval_results.json").read_text())
    assert set(saved) == {"raft", "rloo"}
    assert {
        key: saved["rloo"][key] for key in ("reward_before", "reward_after", "kl_to_reference", "flawed_share_before",
                                            "flawed_share_after", "eos_share_after", "distinct2_before",
                                            "distinct2_after")} == {
        "reward_before": 4.0, "reward_after": 8.5, "kl_to_reference": 0.75, "flawed_share_before": 0.25,
        "flawed_share_after": 0.0, "eos_share_after": 1.0, "distinct2_before": 0.5, "distinct2_after": 0.4}
    assert (tmp_path / "training_curves.png").stat().st_size > 10_000


def _seed_table(tmp_path: Path, runs: dict[int, Path]) -> subprocess.CompletedProcess:
    return run_here(seed_table, [tmp_path / "seeds.json", *(f"{seed}={path}" for seed, path in runs.items())],
                    check=False)


def test_seed_table_checks_every_target_for_every_seed(tmp_path):
    """make demo-seeds: seeds.json keeps each run's figures, the table gives min / median, and a target missed by one
    seed alone is named and fails the command."""
    before = {"reward": 4.0, "greedy_reward": 9.0, "answer_length": 9.0, "eos_share": 1.0, "distinct2": 0.5,
              "prompts": 400, "flawed_share": 0.125}
    good = before | {"reward": 8.5, "kl_to_reference": 0.75, "flawed_share": 0.025, "distinct2": 0.4, "win_rate": 0.5}
    runs = {}
    for seed, rloo_kl in ((1234, 0.75), (7, 0.5), (1, 1.25)):
        runs[seed] = tmp_path / f"seed_{seed}"
        _policy(runs[seed] / "rloo", before, good | {"kl_to_reference": rloo_kl})
        _policy(runs[seed] / "raft", before, good | {"kl_to_reference": 2.0, "flawed_share": 0.0})
    proc = _seed_table(tmp_path, runs)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "MISSED: rloo seed 1: KL 1.250", "RAFT has no KL target; RLOO's KL is missed at seed 1 only"
    raft, rloo = (line.split("  ") for line in lines[2:4])
    assert [cell.strip() for cell in rloo if cell.strip()] == [
        "RLOO", "50 / 50", "5.0x / 5.0x", "+4.50 / +4.50", "1.000 / 1.000", "0.80x / 0.80x", "0.500 / 0.750"]
    assert "none left / none left" in raft, "no flaw left: the cut is unbounded"
    saved = json.loads((tmp_path / "seeds.json").read_text())
    assert set(saved) == {"raft", "rloo"} and set(saved["rloo"]) == {"1234", "7", "1"}
    assert saved["rloo"]["1"]["kl_to_reference"] == 1.25 and saved["rloo"]["7"]["flawed_share_before"] == 0.125
    (runs[1] / "rloo" / "eval_results.json").write_text(json.dumps(good))
    proc = _seed_table(tmp_path, runs)
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1] == "all 33 targets met for every seed"


def test_seed_table_refuses_a_seed_without_every_algorithm(tmp_path):
    before = {"reward": 4.0, "eos_share": 1.0, "distinct2": 0.5, "prompts": 400, "flawed_share": 0.125}
    _policy(tmp_path / "a" / "rloo", before, before)
    _policy(tmp_path / "b" / "raft", before, before)
    proc = _seed_table(tmp_path, {1: tmp_path / "a", 2: tmp_path / "b"})
    assert proc.returncode == 2 and proc.stderr.startswith("error: seed 1: no finished run of raft in")


def _math_run(path: Path, before: float, after: float, eos: float = 1.0, length: float = 6.0) -> Path:
    """A GRPO run rewarded by math_answer alone: its reward is the share right, as step 3 reports it."""
    start = {"reward": before, "greedy_reward": 0.625, "accuracy": before, "greedy_accuracy": 0.625,
             "answer_length": 6.0, "eos_share": 1.0, "distinct2": 0.25, "prompts": 800}
    end = start | {"reward": after, "accuracy": after, "greedy_accuracy": 0.75, "greedy_reward": 0.75,
                   "eos_share": eos, "answer_length": length, "kl_to_reference": 0.5, "win_rate": 0.25}
    return _policy(path, start, end)


def test_a_run_from_another_start_gets_its_own_before_row(tmp_path):
    """GRPO beside the reward-model runs: the shared "before" row stays above them, GRPO's own start above it, and a
    line says that its reward is the share right (the bug this catches: five "before" rows, or GRPO's start shown
    as the others')."""
    before = {"reward": 4.0, "greedy_reward": 9.0, "answer_length": 9.0, "eos_share": 1.0, "distinct2": 0.5,
              "prompts": 768, "flawed_share": 0.25}
    _policy(tmp_path / "step3_rlhf" / "rloo", before, before | {"reward": 8.5, "kl_to_reference": 0.75,
                                                                "win_rate": 0.5})
    _policy(tmp_path / "step3_rlhf" / "raft", before, before | {"reward": 8.0, "kl_to_reference": 1.25,
                                                                "win_rate": 0.625})
    _math_run(tmp_path / "step3_rlhf" / "grpo", 0.25, 0.625)
    lines = run_here(run_summary, [tmp_path]).stdout.splitlines()
    assert lines[-8].startswith("step3_rlhf, one seeded sample per held-out prompt (768/800 prompts)")
    table = [line.split("  ")[0].strip() for line in lines[-6:-1]]
    assert table == ["before", "RAFT", "RLOO", "before (grpo)", "GRPO"]
    assert lines[-3].split()[2:5] == ["0.25", "0.62", "-"] and lines[-2].split()[1:5] == ["0.62", "0.75", "-", "0.500"]
    assert lines[-1] == "GRPO: its reward and greedy are math_answer's, the share of answers right"
    saved = json.loads((tmp_path / "step3_rlhf" / "eval_results.json").read_text())["grpo"]
    assert {key: saved[key] for key in ("accuracy_before", "accuracy_after", "greedy_accuracy_before",
                                        "greedy_accuracy_after")} == {
        "accuracy_before": 0.25, "accuracy_after": 0.625, "greedy_accuracy_before": 0.625,
        "greedy_accuracy_after": 0.75}


def test_seed_table_checks_grpos_own_targets(tmp_path):
    """GRPO is held to its own targets (the share right doubles and gains 25 points, EOS >= 0.95, length <= 1.5x),
    in a table of its own, and not to the reward-model runs' (it has no flawed share to cut)."""
    before = {"reward": 4.0, "greedy_reward": 9.0, "answer_length": 9.0, "eos_share": 1.0, "distinct2": 0.5,
              "prompts": 400, "flawed_share": 0.125}
    good = before | {"reward": 8.5, "kl_to_reference": 0.75, "flawed_share": 0.025, "distinct2": 0.4}
    runs = {}
    for seed, (right_before, right_after, length) in {1234: (0.25, 0.625, 6.0), 7: (0.25, 0.5, 6.0),
                                                      1: (0.375, 0.75, 9.5)}.items():
        runs[seed] = tmp_path / f"seed_{seed}"
        _policy(runs[seed] / "rloo", before, good)
        _math_run(runs[seed] / "grpo", right_before, right_after, length=length)
    proc = _seed_table(tmp_path, runs)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 1 and lines[-1] == "MISSED: grpo seed 1: length 1.58x", \
        "seed 7 doubles with +25.0 points exactly; seed 1 doubles but its answers grew 1.58x"
    assert lines[3].split()[:5] == ["algorithm", "sampled", "right", "(>=", "2x)"]
    assert [cell.strip() for cell in lines[4].split("  ") if cell.strip()] == [
        "GRPO", "2.00x / 2.00x", "+25.0 / +37.5", "1.000 / 1.000", "1.00x / 1.00x"]
    (runs[1] / "grpo" / "eval_results.json").write_text(json.dumps(
        json.loads((runs[1] / "grpo" / "eval_results.json").read_text()) | {"answer_length": 8.0}))
    proc = _seed_table(tmp_path, runs)
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1] == "all 30 targets met for every seed"


def test_a_figure_with_an_interval_shows_it(tmp_path):
    """Step 3 with math_answer reports each share right with its 95% interval, before and after; the summary line
    shows both beside the figures (a figure without one, as step 1's perplexity, shows none)."""
    start = {"accuracy": 0.12, "reward": 0.12, "ci95": {"accuracy": [0.0768, 0.1752]}}
    end = {"accuracy": 0.58, "reward": 0.58, "ci95": {"accuracy": [0.5108, 0.6463]}}
    run = _policy(tmp_path / "step3_grpo", start, end)
    assert summary_line(run, [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]) == (
        "step3_grpo: accuracy 0.12 [0.077, 0.175] before training, 0.58 [0.511, 0.646] after 1 steps")
