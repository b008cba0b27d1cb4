"""The step-3 launchers for real on CPU, in a file of their own so that the test workers share the launcher tests."""
from test_launchers import _tiny_run_env, launch


def test_single_gpu_rlhf_launcher_runs_steps_1_to_3_for_real(opt_dir, pair_files, tmp_path):
    """run_1.3b.sh, DeepSpeed-Chat's single-GPU example, on tiny models: SFT with LoRA, a reward model, then PPO with
    LoRA and gradient accumulation on the actor and a critic from the reward model; the summary covers all three."""
    out = tmp_path / "rlhf"
    env = _tiny_run_env(opt_dir, pair_files, out) | {"REWARD_MODEL": str(opt_dir)}
    proc = launch("training_scripts/opt/single_gpu/run_1.3b.sh", env, "--data_split", "2,4,1", "--max_seq_len", "96",
                  "--eval_iters", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    for step in ("step1_sft", "step2_reward_model", "step3_rlhf"):
        assert (out / step / "eval_results.json").exists() and (out / step / "model.safetensors").exists()
    assert "PPO" in (out / "step3_rlhf" / "README.md").read_text()
    assert "step3_rlhf: reward" in proc.stdout and "step2_reward_model: accuracy" in proc.stdout
