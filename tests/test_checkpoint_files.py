"""Which checkpoints are kept, which one --resume picks whatever order they were written in, and an export that
fails half-way."""
import argparse
import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from utils.engine.checkpoint import Position, find_checkpoint, save_checkpoint
from utils.engine.run import _check_output_dir
from utils.run_files import exit_if_finished
from utils.errors import RunError, UserError
from utils.models.export import export_model


class FolderOnlyEngine:
    """Writes what DeepSpeed's save_checkpoint writes for a tag: a folder of files (no training needed)."""

    def save_checkpoint(self, root: str, tag: str, save_latest: bool) -> None:
        assert not save_latest  # `latest` is ours to write, after the rename
        (Path(root) / tag).mkdir(parents=True)
        (Path(root) / tag / "mp_rank_00_model_states.pt").write_text("weights")


def _args(out, **overrides):
    return argparse.Namespace(**{"output_dir": str(out), "save_total_limit": 2, "per_device_train_batch_size": 8,
                                 "gradient_accumulation_steps": 1, "zero_stage": 0, "resume": True,
                                 "resume_from": None} | overrides)


def _save(out, step, **overrides):
    return save_checkpoint(FolderOnlyEngine(), _args(out, **overrides), Position(step, step * 2))


def test_a_step3_checkpoint_resumes_only_with_the_same_algorithm_and_k(tmp_path):
    _save(tmp_path, 10, algo="rloo", num_generations=4)
    assert find_checkpoint(_args(tmp_path, algo="rloo", num_generations=4))[1] == Position(10, 20)
    with pytest.raises(UserError, match="written with algo rloo, this run has raft"):
        find_checkpoint(_args(tmp_path, algo="raft", num_generations=4))
    with pytest.raises(UserError, match="written with num generations 4, this run has 8"):
        find_checkpoint(_args(tmp_path, algo="rloo", num_generations=8))
    with pytest.raises(UserError, match=r"written with reward funcs \[\], this run has \['math_answer'\]"):
        find_checkpoint(_args(tmp_path, algo="rloo", num_generations=4, reward_funcs=["math_answer"]))


def test_rotation_keeps_the_newest_written_and_latest_names_the_last(tmp_path):
    for step in (10, 20, 30):
        _save(tmp_path, step)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step20", "step30"]
    assert (root / "latest").read_text() == "step30"
    path, position = find_checkpoint(_args(tmp_path))
    assert path == root / "step30" and position == Position(30, 60)


def test_after_resuming_from_an_earlier_checkpoint_the_new_one_is_kept(tmp_path):
    for step in (20, 30):
        _save(tmp_path, step)
    _save(tmp_path, 25, save_total_limit=1)  # a run resumed from step20 saves step25: newer, though a lower step
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step25"]
    assert find_checkpoint(_args(tmp_path))[0] == root / "step25"


def test_resume_falls_back_to_the_newest_complete_checkpoint(tmp_path):
    _save(tmp_path, 10)
    _save(tmp_path, 20)
    root = tmp_path / "checkpoints"
    shutil.rmtree(root / "step20")  # latest now names a checkpoint that is gone
    (root / "step30").mkdir()  # and an incomplete one, without position.json, lies around
    assert find_checkpoint(_args(tmp_path))[0] == root / "step10"
    assert find_checkpoint(_args(tmp_path / "elsewhere")) is None
    assert find_checkpoint(_args(tmp_path, resume=False)) is None


def test_a_failed_export_leaves_the_previous_one_whole(opt_dir, tmp_path, monkeypatch):
    model = AutoModelForSequenceClassification.from_pretrained(opt_dir, num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(opt_dir)
    out = tmp_path / "rm"
    export_model(model, tokenizer, out, zero_stage=0, extra_files={"eval_results.json": {"accuracy": 0.5}})
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(tokenizer), "save_pretrained", disk_full)
    with pytest.raises(RunError, match=f"cannot write the model to {out}: .*No space left on device"):
        export_model(model, tokenizer, out, zero_stage=0, extra_files={"eval_results.json": {"accuracy": 0.9}})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the partial copy is gone too
    with pytest.raises(RunError, match="cannot write the model to .*fresh: .*No space left on device"):
        export_model(model, tokenizer, tmp_path / "fresh", zero_stage=0, extra_files={"eval_results.json": {}})
    assert not (tmp_path / "fresh" / "eval_results.json").exists()  # nothing there looks finished
    assert json.loads((out / "eval_results.json").read_text()) == {"accuracy": 0.5}


def test_an_export_stopped_after_the_weights_leaves_no_results_beside_them(opt_dir, tmp_path, monkeypatch):
    """eval_results.json moves in last and the earlier run's goes first, so a reader never sees results beside
    weights they do not describe (planted: sort the moves by name, which puts eval_results.json before
    model.safetensors)."""
    model = AutoModelForSequenceClassification.from_pretrained(opt_dir, num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(opt_dir)
    out = tmp_path / "rm"
    export_model(model, tokenizer, out, zero_stage=0, extra_files={"eval_results.json": {"accuracy": 0.5}})
    old_weights = (out / "model.safetensors").read_bytes()
    with torch.no_grad():
        model.score.weight.add_(1.0)
    replace, moved = os.replace, []

    def stop_after_the_weights(src, dst):
        if moved and moved[-1] == "model.safetensors":
            raise OSError(errno.EIO, "Input/output error")
        replace(src, dst)
        moved.append(Path(dst).name)

    monkeypatch.setattr(os, "replace", stop_after_the_weights)
    with pytest.raises(RunError, match="cannot write the model to .*rm: .*Input/output error"):
        export_model(model, tokenizer, out, zero_stage=0, extra_files={"eval_results.json": {"accuracy": 0.9}})
    assert (out / "model.safetensors").read_bytes() != old_weights  # the new weights are in
    assert not (out / "eval_results.json").exists(), moved


def test_overwrite_retires_the_finished_marker_so_a_stopped_new_run_resumes(tmp_path):
    """--overwrite_output_dir on a finished run: should the new run stop before its export, --resume must continue
    it, not report the old run as finished. Planted: no unlink of eval_results.json under --overwrite_output_dir
    (the resume then exits 0 with "nothing to resume")."""
    (tmp_path / "eval_results.json").write_text("{}")
    (tmp_path / "model.safetensors").write_text("the finished run's weights")
    (tmp_path / "checkpoints" / "step8").mkdir(parents=True)
    flags = {"output_dir": str(tmp_path), "save_interval": 0, "save_total_limit": 1, "resume_from": None}
    _check_output_dir(argparse.Namespace(**flags, resume=False, overwrite_output_dir=True))
    assert not (tmp_path / "eval_results.json").exists() and not (tmp_path / "checkpoints").exists()
    assert (tmp_path / "model.safetensors").exists(), "the old model stays until the new export replaces it"
    (tmp_path / "checkpoints" / "step2").mkdir(parents=True)  # the new run's checkpoint, then it was stopped
    resume = argparse.Namespace(**flags, resume=True, overwrite_output_dir=False)
    exit_if_finished(resume)  # no SystemExit
    _check_output_dir(resume)
