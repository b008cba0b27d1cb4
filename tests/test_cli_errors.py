"""Bad input and configuration stop with one clear line, before any model is loaded; --help and mistakes in the flags
alone answer without importing torch, deepspeed or transformers."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT, STEP1, STEP2, STEP3, entrypoint, main_exits, run_step2

HEAVY = ("torch", "deepspeed", "transformers")
# Runs a script (or `-m module`) as `python` does, then prints which of HEAVY were imported; the exit status is kept.
RUNNER = f"""
import runpy, sys
target, sys.argv = sys.argv[1], sys.argv[1:]
try:
    if target.startswith("-m"):
        sys.argv[0] = target[2:]
        runpy.run_module(target[2:], run_name="__main__", alter_sys=True)
    else:
        runpy.run_path(target, run_name="__main__")
    code = 0
except SystemExit as stop:
    code = stop.code
print("imported:", ",".join(m for m in {HEAVY!r} if m in sys.modules))
sys.exit(code)
"""
RW_EVAL = ROOT / "rw_eval.py"
PROMPT_EVAL = ROOT / "training" / "step1_supervised_finetuning" / "prompt_eval.py"
ENTRYPOINTS = [STEP1, STEP2, STEP3, PROMPT_EVAL, RW_EVAL, "-mutils.models.dschat_convert", "-mutils.models.gguf_import"]


def _light(target, *args):
    """A user's command line in a fresh interpreter: its exit status, stdout and stderr, after checking that it
    imported none of HEAVY."""
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(target), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.stdout.splitlines()[-1] == "imported: ", proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.returncode, proc.stdout, proc.stderr


def _name(target) -> str:
    return target[2:] if isinstance(target, str) else f"{target.parent.name}/{target.name}"


@pytest.mark.parametrize("target", ENTRYPOINTS, ids=_name)
def test_help_imports_nothing_heavy(target):
    code, _, _ = _light(target, "--help")
    assert code == 0


STEP3_BASE = ["--actor_model_name_or_path", "a", "--critic_model_name_or_path", "r", "--output_dir", "o"]


@pytest.mark.parametrize("target, args, message", [
    (STEP2, ["--model_name_or_path", "m", "--output_dir", "o", "--no_such_flag"],
     "unrecognized arguments: --no_such_flag"),
    (STEP1, ["--model_name_or_path", "m"], "the following arguments are required: --output_dir"),
    (STEP3, [*STEP3_BASE, "--algo", "reinforce"], "argument --algo: invalid choice: 'reinforce'"),
    (STEP2, ["--model_name_or_path", "m", "--output_dir", "o", "--lr_scheduler_type", "steps"],
     "argument --lr_scheduler_type: invalid choice"),
    (STEP3, [*STEP3_BASE, "--algo", "online_dpo", "--reward_normalization", "z"],
     "error: --reward_normalization z: online DPO pairs"),
    (STEP3, [*STEP3_BASE, "--temperature", 0], "error: --temperature 0.0: sampling needs a temperature above 0"),
    (STEP3, [*STEP3_BASE, "--per_device_training_batch_size", 2], "give both the same number of prompts"),
    (STEP3, [*STEP3_BASE, "--reward_funcs", "math"], "error: --reward_funcs math: no such built-in reward function"),
    (STEP3, [*STEP3_BASE, "--reward_funcs", "flaw", "--reward_weights", 1], "--reward_weights: 1 weights given, 2 expected"),
    (STEP2, ["--model_name_or_path", "m", "--output_dir", "o", "--eval_data_path", "x.jsonl"],
     "error: no training data: give --data_path"),
    (RW_EVAL, ["--model_name_or_path", "m", "--prompt", "Hi?"], "error: got 1 --prompt and 0 --answer"),
    (PROMPT_EVAL, ["--model_name_or_path_baseline", "m"], "required: --model_name_or_path_finetune"),
    ("-mutils.models.gguf_import", ["out"], "error: give either a .gguf file or --package"),
    ("-mutils.models.dschat_convert", ["src"], "the following arguments are required: out_dir"),
])
def test_flag_mistakes_answer_in_one_line_without_heavy_imports(target, args, message):
    code, _, stderr = _light(target, *args)
    assert code == 2 and message in stderr and "Traceback" not in stderr
    assert sum(line.startswith("error:") or ": error: " in line for line in stderr.splitlines()) == 1, stderr


@pytest.mark.parametrize("target", [STEP1, STEP2, STEP3], ids=_name)
def test_a_finished_run_resumed_exits_at_once(target, tmp_path):
    """A launcher's rerun passes --resume to every step: a finished one says so and exits 0 before the libraries load
    (planted: the check back after the engine's imports)."""
    (tmp_path / "eval_results.json").write_text("{}")
    model = STEP3_BASE[:4] if target == STEP3 else ["--model_name_or_path", "m"]
    code, stdout, _ = _light(target, *model, "--data_path", "synthetic", "--output_dir", tmp_path, "--resume")
    assert code == 0 and f"--output_dir {tmp_path} holds a finished run" in stdout and "nothing to resume" in stdout


def test_a_mistake_after_the_engine_loads_is_one_line_too(opt_dir, tmp_path):
    """A real command line through plain python: a missing data file is one line, exit 2, no traceback."""
    proc = run_step2(["--model_name_or_path", opt_dir, "--data_path", tmp_path / "missing.jsonl", "--output_dir",
                      tmp_path], check=False)
    assert proc.returncode == 2 and f"error: data file not found: {tmp_path / 'missing.jsonl'}" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture()
def step2_fails(opt_dir, tmp_path, monkeypatch, capsys):
    def fails(args, message):
        code, _, stderr = main_exits(STEP2, ["--model_name_or_path", opt_dir, "--output_dir", tmp_path, *args],
                                  monkeypatch, capsys)
        assert code == 2 and message in stderr and "Traceback" not in stderr, stderr[-2000:]
    return fails


def test_malformed_line(step2_fails, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}) + "\n{oops\n")
    step2_fails(["--data_path", bad], f"error: {bad}:2: invalid JSON")


def test_fp16_on_cpu(step2_fails):
    step2_fails(["--dtype", "fp16"], "--dtype fp16 does not run on CPU")


def test_wrong_num_padding_for_first_pad(step2_fails):
    step2_fails(["--score_token", "first_pad", "--num_padding_at_beginning", "0"], "set --num_padding_at_beginning 1")


def test_missing_model(tmp_path, monkeypatch, capsys):
    code, _, stderr = main_exits(STEP2, ["--model_name_or_path", tmp_path / "no-model", "--output_dir", tmp_path],
                              monkeypatch, capsys)
    assert code == 2 and "error: cannot load the tokenizer" in stderr


def test_help_lists_deepspeed_chat_flags(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(STEP2), "--help"])
    with pytest.raises(SystemExit):
        entrypoint(STEP2).main()
    out = capsys.readouterr().out
    for flag in ("--data_path", "--data_split", "--num_padding_at_beginning", "--zero_stage", "--score_token",
                 "--loss", "--template", "--deepspeed_config", "--compute_fp32_loss", "--eval_interval"):
        assert flag in out


def test_rw_eval_refuses_a_folder_that_is_not_a_model(tmp_path, monkeypatch, capsys):
    code, _, stderr = main_exits(RW_EVAL, ["--model_name_or_path", tmp_path], monkeypatch, capsys)
    assert code == 2 and "cannot load a reward model from" in stderr and "Traceback" not in stderr
