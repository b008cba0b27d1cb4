"""Step 3's DPO end to end on CPU, on the tiny actor: offline DPO learns the preference of held-out pairs, repeats
exactly from a seed, and trains the same with its reference log-probs precomputed, which a resume on other pairs
refuses; a pair whose prompts differ is refused with its file and line, or skipped and counted; online DPO logs each
iteration's best, worst and mean rewards and its skipped ties, and a run killed after an iteration resumes onto the
uninterrupted run's weights."""
import json
import os
import signal

import torch
from safetensors.torch import load_file
from transformers import pipeline

from conftest import STEP3, main_exits, read_metrics, rlhf_args, run_step3, start_step3, wait_until, write_jsonl
from utils.data.synthetic import generate_pairs

TIMING = ("time", "elapsed_s", "tokens_per_s", "mfu", "generate_s", "score_s", "generated_tokens_per_s")
BAD = {"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello.", "rejected": "\n\nHuman: Bye?\n\nAssistant: Hello."}


def _pairs_file(path, n, bad_at=None):
    """n synthetic pairs as a JSONL file, with an HH transcript pair whose prompts differ at line bad_at."""
    rows = [{k: row[k] for k in ("prompt", "chosen", "rejected")} for row in generate_pairs(n, seed=5)]
    if bad_at is not None:
        rows.insert(bad_at - 1, BAD)
    return write_jsonl(path, rows)


def _dpo_args(actor, out, *extra):
    return ["--algo", "dpo", "--actor_model_name_or_path", actor, "--data_split",
            "0,1,0", "--max_seq_len", 64, "--per_device_training_batch_size", 8, "--per_device_eval_batch_size", 16,
            "--eval_iters", 2, "--actor_learning_rate", 2e-3, "--lr_scheduler_type", "constant", "--actor_dropout",
            0.0, "--dtype", "fp32", "--beta", 0.5, "--output_dir", out, *extra]


def _untimed(out):
    return [{k: v for k, v in m.items() if k not in TIMING} for m in read_metrics(out)]


def test_dpo_learns_the_preference_repeats_from_a_seed_and_precomputes_its_reference(actor_dir, reward_dir,
                                                                                    tmp_path, monkeypatch, capsys):
    """Held-out preference accuracy from 0 (every pair ties at the start) to well above chance; a second seeded run
    gives the same metrics and weights; precomputed reference log-probs give the same losses, with no reference
    kept, and a resume on other pairs is refused before any model loads (planted: no fingerprint check, and the
    resumed run trains on)."""
    data = ["--data_path", _pairs_file(tmp_path / "pairs.jsonl", 160, bad_at=6), "--on_bad_row", "skip"]
    runs = {name: tmp_path / name for name in ("dpo", "again", "precomputed")}
    for name, out in runs.items():
        extra = (["--precompute_ref_log_probs", "--save_interval", 6] if name == "precomputed"
                 else ["--critic_model_name_or_path", reward_dir])  # held-out prompts sampled and scored too
        proc = run_step3(_dpo_args(actor_dir, out, *data, *extra))
        assert "skipped 1 bad rows" in proc.stdout + proc.stderr  # the pair whose prompts differ, counted
    assert "reference log-probs computed for every pair" in proc.stdout + proc.stderr
    assert "reference 0." not in proc.stdout + proc.stderr  # no reference held while training
    metrics = _untimed(runs["dpo"])
    assert metrics == _untimed(runs["again"])
    start, final = metrics[0], json.loads((runs["dpo"] / "eval_results.json").read_text())
    assert start["pair_accuracy"] == 0.0 and abs(start["pair_loss"] - 0.693147) < 1e-5
    assert final["pair_accuracy"] >= 0.75 and final["pair_margin"] > 0.5, final
    assert {"reward", "reward_before", "kl_to_reference", "eos_share", "distinct2"} <= final.keys()
    weights = {name: load_file(runs[name] / "model.safetensors") for name in ("dpo", "again")}
    assert all(torch.equal(weights["dpo"][k], weights["again"][k]) for k in weights["dpo"])
    losses = [[m["loss"] for m in read_metrics(runs[name]) if m["split"] == "train"] for name in ("dpo", "precomputed")]
    assert max(abs(a - b) for a, b in zip(*(curve[:10] for curve in losses))) < 1e-5  # rounding grows under Adam
    assert "DPO" in (runs["dpo"] / "README.md").read_text()
    lm = pipeline("text-generation", model=str(runs["dpo"]), device="cpu")
    assert lm(" Human: Hi? Assistant:", max_new_tokens=4, do_sample=False)[0]["generated_text"]

    out = runs["precomputed"]  # as a killed run leaves it: checkpoints, the reference log-probs, no export
    (out / "eval_results.json").unlink()
    other = ["--data_path", _pairs_file(tmp_path / "other.jsonl", 159)]
    code, _, stderr = main_exits(STEP3, _dpo_args(actor_dir, out, *other, "--precompute_ref_log_probs", "--resume"),
                                 monkeypatch, capsys)
    assert code == 2 and stderr.count("error: --precompute_ref_log_probs: ") == 1, stderr[-2000:]
    assert "Loading weights" not in stderr
    resumed = run_step3(_dpo_args(actor_dir, out, *data, "--precompute_ref_log_probs", "--resume"))
    assert "reference log-probs computed" not in resumed.stdout + resumed.stderr  # read back, not recomputed


def _online_args(actor_dir, reward_dir, out, *extra):
    return rlhf_args(actor_dir, reward_dir, out, "--algo", "online_dpo", "--data_path", "synthetic:100",
                     "--prompts_per_iteration", 8, "--num_iterations", 4, "--beta", 0.5, "--save_interval", 2,
                     "--tie_threshold", 1, *extra)


def test_online_dpo_logs_its_iterations_and_a_killed_run_resumes_at_an_iteration(actor_dir, reward_dir, inject,
                                                                                 tmp_path):
    """4 iterations of 8 prompts, 2 updates each, a checkpoint after each. SIGKILL after the second, then --resume:
    the run samples the last two iterations again from the same seeds and ends with the uninterrupted run's weights
    (planted: the starting policy as every iteration's reference, and the later iterations no longer start at
    log 2)."""
    whole = tmp_path / "whole"
    proc = run_step3(_online_args(actor_dir, reward_dir, whole), env=inject, fresh=True)
    train = [m for m in read_metrics(whole) if m["split"] == "train"]
    assert [m["step"] for m in train] == list(range(1, 9))
    assert all(m["reward_worst"] <= m["reward"] <= m["reward_best"] for m in train)
    assert all(abs(m["loss"] - 0.693147) < 1e-5 for m in train[::2]), "each iteration starts at its reference"
    ties = sum(m["ties_skipped"] for m in train[::2])
    assert ties > 0 and proc.stdout.count("gave no pair") + proc.stderr.count("gave no pair") == sum(
        1 for m in train[::2] if m["ties_skipped"])  # within 1 letter e: each iteration's ties are said and counted
    out = tmp_path / "killed"
    proc = start_step3(_online_args(actor_dir, reward_dir, out), inject)
    wait_until(lambda: (out / "checkpoints" / "latest").read_text() == "step4", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    run_step3(_online_args(actor_dir, reward_dir, out, "--resume"), env=inject, fresh=True)
    ours, theirs = load_file(out / "model.safetensors"), load_file(whole / "model.safetensors")
    assert all(torch.allclose(ours[k], theirs[k], atol=1e-5) for k in theirs)
    assert _untimed(out)[-1] == _untimed(whole)[-1]


def test_a_pair_whose_prompts_differ_is_refused_with_its_file_and_line(actor_dir, tmp_path, monkeypatch, capsys):
    """As in step 2, before any model loads; with --on_bad_row skip it is counted (the first test)."""
    data = _pairs_file(tmp_path / "pairs.jsonl", 30, bad_at=6)
    code, _, stderr = main_exits(STEP3, _dpo_args(actor_dir, tmp_path / "out", "--data_path", data), monkeypatch,
                                 capsys)
    assert code == 2 and f"{data}:6" in stderr and "differ before the last" in stderr
    assert "Loading weights" not in stderr
