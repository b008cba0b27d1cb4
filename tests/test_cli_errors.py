"""Bad input and configuration stop with one clear line, before any model is loaded."""
import json
import subprocess
import sys

from conftest import ROOT, STEP2, run_step2


def _fails(args, message):
    proc = run_step2(args, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_data_file(opt_dir, tmp_path):
    _fails(["--model_name_or_path", opt_dir, "--data_path", tmp_path / "missing.jsonl", "--output_dir", tmp_path],
           f"error: data file not found: {tmp_path / 'missing.jsonl'}")


def test_malformed_line(opt_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}) + "\n{oops\n")
    _fails(["--model_name_or_path", opt_dir, "--data_path", bad, "--output_dir", tmp_path], f"{bad}:2: invalid JSON")


def test_fp16_on_cpu(opt_dir, tmp_path):
    _fails(["--model_name_or_path", opt_dir, "--dtype", "fp16", "--output_dir", tmp_path],
           "--dtype fp16 does not run on CPU")


def test_wrong_num_padding_for_first_pad(opt_dir, tmp_path):
    _fails(["--model_name_or_path", opt_dir, "--score_token", "first_pad", "--num_padding_at_beginning", "0",
            "--output_dir", tmp_path], "set --num_padding_at_beginning 1")


def test_missing_model(tmp_path):
    _fails(["--model_name_or_path", tmp_path / "no-model", "--output_dir", tmp_path], "cannot load the tokenizer")


def test_help_lists_deepspeed_chat_flags():
    out = subprocess.run([sys.executable, str(STEP2), "--help"], capture_output=True, text=True, check=True).stdout
    for flag in ("--data_path", "--data_split", "--num_padding_at_beginning", "--zero_stage", "--score_token",
                 "--loss", "--template", "--deepspeed_config", "--compute_fp32_loss", "--eval_interval"):
        assert flag in out


def test_rw_eval_errors(tmp_path):
    base = [sys.executable, str(ROOT / "rw_eval.py"), "--model_name_or_path", str(tmp_path)]
    unmatched = subprocess.run(base + ["--prompt", "Hi?"], capture_output=True, text=True)
    assert unmatched.returncode == 2 and "got 1 --prompt and 0 --answer" in unmatched.stderr
    not_a_model = subprocess.run(base, capture_output=True, text=True)
    assert not_a_model.returncode == 2 and "cannot load a reward model from" in not_a_model.stderr
    assert "Traceback" not in not_a_model.stderr
