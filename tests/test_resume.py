"""Reliability by fault injection: SIGKILL mid-run then --resume, SIGTERM preemption, a crash inside a checkpoint
write, non-finite losses, and the configuration mistakes caught before any model is loaded."""
import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from safetensors.torch import load_file

from conftest import CPU_ENV, STEP1, STEP2, free_port, main_exits, read_metrics, run_step1, run_step2
from utils.errors import RUN_ERROR_EXIT

EPOCHS = 3  # 32 optimizer steps an epoch with one process and batch 8: a run killed after step 40 resumes in epoch 2


def _args(model_dir, pair_files, out, *extra):
    train, evals = pair_files
    return ["--model_name_or_path", model_dir, "--data_path", train, "--eval_data_path", evals, "--data_split",
            "0,1,0", "--per_device_train_batch_size", 8, "--max_seq_len", 96, "--learning_rate", 1e-3,
            "--num_train_epochs", EPOCHS, "--dropout", 0.1, "--dtype", "fp32", "--save_interval", 16,
            "--output_dir", out, *extra]


def _start(args, nproc=1, extra_env=None, script=STEP2):
    """Start a step in its own process group, so that a kill reaches the launcher and its workers, as a node loss."""
    if nproc == 1:
        cmd = [sys.executable, str(script)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
               free_port(), str(script)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")} | CPU_ENV
    return subprocess.Popen(cmd + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env | (extra_env or {}), start_new_session=True)


def _wait_for_step(out, step, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if any(m["split"] == "train" and m["step"] >= step for m in read_metrics(out)):
                return
        except (OSError, json.JSONDecodeError):  # not written yet, or a line half-written
            pass
        assert proc.poll() is None, f"the run ended before step {step}:\n{proc.stderr.read()[-3000:]}"
        time.sleep(0.01)
    raise AssertionError(f"no step {step} within {timeout} s")


def _train_losses(out):
    return {m["step"]: m["loss"] for m in read_metrics(out) if m["split"] == "train"}


def _same_run(resumed, reference):
    """The same loss at every step and the same final weights, within float noise."""
    ours, theirs = _train_losses(resumed), _train_losses(reference)
    assert sorted(ours) == sorted(theirs)
    assert [ours[s] for s in sorted(ours)] == pytest.approx([theirs[s] for s in sorted(theirs)], abs=1e-5)
    a, b = load_file(resumed / "model.safetensors"), load_file(reference / "model.safetensors")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


@pytest.fixture(scope="module")
def reference(opt_dir, pair_files, tmp_path_factory):
    """The uninterrupted run that every interrupted one must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "run"
    run_step2(_args(opt_dir, pair_files, out))
    return out


def test_sigkill_then_resume_matches_an_uninterrupted_run(opt_dir, pair_files, reference, tmp_path):
    out = tmp_path / "run"
    proc = _start(_args(opt_dir, pair_files, out))
    _wait_for_step(out, 40, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    checkpoints = out / "checkpoints"
    latest = (checkpoints / "latest").read_text()
    assert latest in {"step32", "step48", "step64"} and not (out / "eval_results.json").exists()
    assert len([p for p in checkpoints.glob("step*")]) <= 2  # --save_total_limit 2
    proc = run_step2(_args(opt_dir, pair_files, out, "--resume"))
    assert f"resumed from {checkpoints / latest} at step {latest[4:]}" in proc.stdout
    _same_run(out, reference)


def test_sigkill_two_processes_then_resume(opt_dir, pair_files, tmp_path, monkeypatch, capsys):
    common = ["--per_device_train_batch_size", 4, "--num_train_epochs", 2, "--save_interval", 8]
    reference = tmp_path / "reference"
    run_step2(_args(opt_dir, pair_files, reference, *common), nproc=2, launcher="torchrun")
    out = tmp_path / "run"
    proc = _start(_args(opt_dir, pair_files, out, *common), nproc=2)
    _wait_for_step(out, 20, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / "checkpoints" / "latest").read_text() in {"step16", "step24", "step32"}
    run_step2(_args(opt_dir, pair_files, out, *common, "--resume"), nproc=2, launcher="torchrun")
    _same_run(out, reference)

    # The same checkpoint with one process (this one, outside any process group): refused with the reason.
    latest = out / "checkpoints" / (out / "checkpoints" / "latest").read_text()
    code, _, stderr = main_exits(STEP2, _args(opt_dir, pair_files, out, *common, "--resume_from", latest,
                                              "--overwrite_output_dir"), monkeypatch, capsys)
    assert code == 2 and "it was written with world size 2, this run has 1" in stderr


def test_sigterm_saves_a_checkpoint_and_exits_75(opt_dir, pair_files, reference, tmp_path):
    out = tmp_path / "run"
    proc = _start(_args(opt_dir, pair_files, out, "--save_interval", 0))
    _wait_for_step(out, 20, proc)
    os.kill(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 75, stderr[-3000:]
    step = int(stderr.split("checkpoint saved at step ")[1].split()[0])
    assert step >= 20 and (out / "checkpoints" / "latest").read_text() == f"step{step}"
    run_step2(_args(opt_dir, pair_files, out, "--save_interval", 0, "--resume"))
    _same_run(out, reference)


def test_step1_packed_with_accumulation_preempted_mid_epoch_then_resumed(opt_dir, pair_files, tmp_path):
    args = functools.partial(_args, opt_dir, pair_files)
    common = ["--data_split", "1,0,0", "--packing", "--gradient_accumulation_steps", 2, "--zero_stage", 1,
              "--num_train_epochs", 2, "--per_device_train_batch_size", 4, "--save_interval", 0]
    reference = tmp_path / "reference"
    run_step1(args(reference, *common))
    out = tmp_path / "run"
    proc = _start(args(out, *common), script=STEP1)
    _wait_for_step(out, 5, proc)
    proc.send_signal(signal.SIGUSR1)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 75, stderr[-3000:]
    run_step1(args(out, *common, "--resume"))
    _same_run(out, reference)


CRASH_IN_SECOND_SAVE = """
    import os
    import deepspeed

    original = deepspeed.DeepSpeedEngine.save_checkpoint
    calls = []

    def save_then_die(self, *args, **kwargs):
        calls.append(1)
        result = original(self, *args, **kwargs)
        if len(calls) == 2:
            os._exit(9)  # DeepSpeed's files are written; ours and the rename are not
        return result

    deepspeed.DeepSpeedEngine.save_checkpoint = save_then_die
"""


def _inject(tmp_path, code):
    folder = tmp_path / "inject"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(textwrap.dedent(code))
    return {"PYTHONPATH": f"{folder}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def test_a_crash_inside_a_checkpoint_write_resumes_from_the_previous_one(opt_dir, pair_files, reference,
                                                                         tmp_path):
    out = tmp_path / "run"
    proc = _start(_args(opt_dir, pair_files, out), extra_env=_inject(tmp_path, CRASH_IN_SECOND_SAVE))
    proc.communicate(timeout=300)
    assert proc.returncode == 9
    checkpoints = out / "checkpoints"
    assert (checkpoints / "latest").read_text() == "step16"
    assert (checkpoints / ".tmp-step32").is_dir() and not (checkpoints / "step32").exists()
    proc = run_step2(_args(opt_dir, pair_files, out, "--resume"))
    assert "resumed from" in proc.stdout and "at step 16" in proc.stdout
    _same_run(out, reference)
    assert not list(checkpoints.glob(".tmp-*"))  # the next save cleared the leftover


DISK_FULL_IN_SECOND_SAVE = """
    import errno
    import torch

    original = torch.save
    calls = []

    def save_or_fail(obj, path, *args, **kwargs):
        if str(path).endswith(".pt") and "rng_rank" in str(path):
            calls.append(1)
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return original(obj, path, *args, **kwargs)

    torch.save = save_or_fail
"""


def test_a_full_disk_during_a_save_is_reported_and_keeps_the_previous_checkpoint(opt_dir, pair_files, tmp_path):
    out = tmp_path / "run"
    proc = _start(_args(opt_dir, pair_files, out, "--num_train_epochs", 1),
                  extra_env=_inject(tmp_path, DISK_FULL_IN_SECOND_SAVE))
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == RUN_ERROR_EXIT, stderr[-3000:]
    assert f"error: cannot write the checkpoint {out / 'checkpoints' / 'step32'}: [Errno 28] No space left on " \
           "device" in stderr and "the previous checkpoints are untouched" in stderr
    assert (out / "checkpoints" / "latest").read_text() == "step16"
    assert (out / "checkpoints" / "step16" / "position.json").is_file()


NAN_AT_THIRD_MICRO_BATCH = """
    import torch
    from utils.objectives.reward import RewardObjective

    original = RewardObjective.__call__
    calls = []

    def poisoned(self, model, batch):
        loss, stats = original(self, model, batch)
        calls.append(1)
        return (loss * torch.tensor(float("nan")) if len(calls) == 3 else loss), stats

    RewardObjective.__call__ = poisoned
"""


NAN_GRADIENT_AT_STEP_20 = """
    import deepspeed

    original = deepspeed.DeepSpeedEngine.backward
    calls = []

    def poisoned(self, loss, *args, **kwargs):
        result = original(self, loss, *args, **kwargs)
        calls.append(1)
        if len(calls) == 20:
            next(self.module.parameters()).grad.fill_(float("inf"))
        return result

    deepspeed.DeepSpeedEngine.backward = poisoned
"""


def test_non_finite_gradient_norm_stops_and_names_the_last_checkpoint(opt_dir, pair_files, tmp_path):
    out = tmp_path / "run"
    proc = _start(_args(opt_dir, pair_files, out, "--num_train_epochs", 1, "--on_nan", "skip"),
                  extra_env=_inject(tmp_path, NAN_GRADIENT_AT_STEP_20))
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == RUN_ERROR_EXIT, stderr[-3000:]
    assert "error: step 20: the gradient norm is inf" in stderr
    assert f"the last good checkpoint is {out / 'checkpoints' / 'step16'}" in stderr


def test_non_finite_loss_stops_or_is_skipped_and_counted(opt_dir, pair_files, tmp_path):
    env = _inject(tmp_path, NAN_AT_THIRD_MICRO_BATCH)
    stop = _start(_args(opt_dir, pair_files, tmp_path / "stop", "--num_train_epochs", 1), extra_env=env)
    _, stderr = stop.communicate(timeout=300)
    assert stop.returncode == RUN_ERROR_EXIT
    assert "error: step 3: the loss is not finite (nan or inf); no checkpoint was saved yet" in stderr

    skip = _start(_args(opt_dir, pair_files, tmp_path / "skip", "--num_train_epochs", 1, "--on_nan", "skip"),
                  extra_env=env)
    stdout, stderr = skip.communicate(timeout=300)
    assert skip.returncode == 0, stderr[-3000:]
    assert "step 3: skipped a micro-batch with a non-finite loss (1 so far)" in stdout
    train = [m for m in read_metrics(tmp_path / "skip") if m["split"] == "train"]
    assert train[-1]["skipped_losses"] == 1 and train[-1]["fp16_overflow_skips"] == 0
    assert len(train) == 31  # 32 micro-batches, one skipped


def test_configuration_mistakes_are_caught_before_loading(opt_dir, pair_files, reference, tmp_path, monkeypatch,
                                                           capsys):
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints" / "step8").mkdir(parents=True)
    (tmp_path / "file").write_text("")
    cases = [  # (message, output dir, extra flags)
        ("holds a finished run (eval_results.json is there): pass --overwrite_output_dir", reference, []),
        ("holds the checkpoints of an unfinished run: pass --resume", unfinished, []),
        ("is not writable", tmp_path / "file" / "out", []),
        ("--offload needs --zero_stage 1, 2 or 3", tmp_path / "out", ["--offload"]),
        ("--per_device_train_batch_size must be at least 1", tmp_path / "out", ["--per_device_train_batch_size", 0]),
        ("--data_split 0,0,0: expected three non-negative numbers with a positive sum", tmp_path / "out",
         ["--data_split", "0,0,0"]),
        ("--save_total_limit at least 1", tmp_path / "out", ["--save_total_limit", 0]),
        ("not a complete checkpoint", tmp_path / "out", ["--resume_from", tmp_path]),
    ]
    for message, out, extra in cases:
        code, _, stderr = main_exits(STEP2, _args(opt_dir, pair_files, out, *extra), monkeypatch, capsys)
        assert code == 2 and message in stderr, stderr[-2000:]
        assert "Traceback" not in stderr and "Loading weights" not in stderr
    # --resume on a finished run has nothing to do, and says so; refused runs touched nothing.
    finished = run_step2(_args(opt_dir, pair_files, reference, "--resume"))
    assert "holds a finished run (eval_results.json is there): nothing to resume" in finished.stdout
    assert (reference / "model.safetensors").exists() and (unfinished / "checkpoints" / "step8").exists()
