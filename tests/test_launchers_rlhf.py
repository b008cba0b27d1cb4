"""The step-3 launchers for real on CPU, in a file of their own so that the test workers share the launcher tests."""
import json
import shutil
import sys
from pathlib import Path

from conftest import free_port, read_metrics, write_jsonl
from test_launchers import SBATCH, _fake_slurm_bin, _slurm_env, _tiny_run_env, launch

# Step 3's recipes generate up to 256 tokens for prompts of up to 256: a tiny random actor seldom ends an answer, and
# every token of a partitioned ZeRO-3 actor gathers each layer
SHORT_ANSWERS = {"RLHF_FLAGS": "--max_prompt_seq_len 64 --max_answer_seq_len 16"}


def _half(pair_files: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """The first 128 training rows: all three steps run on them, in about half the time of the 256."""
    half = tmp_path / "half.jsonl"
    half.write_text("".join(pair_files[0].read_text().splitlines(keepends=True)[:128]))
    return half, pair_files[1]


def test_single_gpu_rlhf_launcher_runs_steps_1_to_3_for_real(opt_dir, pair_files, tmp_path):
    """run_1.3b.sh, DeepSpeed-Chat's single-GPU example, on tiny models: SFT with LoRA, a reward model, then PPO with
    LoRA and gradient accumulation on the actor and a critic from the reward model; the summary covers all three.
    Step 3's answers are cut to 16 tokens by RLHF_FLAGS, which steps 1 and 2 would refuse."""
    out = tmp_path / "rlhf"
    env = _tiny_run_env(opt_dir, _half(pair_files, tmp_path), out) | {"REWARD_MODEL": str(opt_dir)} | SHORT_ANSWERS
    proc = launch("training_scripts/opt/single_gpu/run_1.3b.sh", env, "--data_split", "2,4,1", "--eval_iters", "1",
                  cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    for step in ("step1_sft", "step2_reward_model", "step3_rlhf"):
        assert (out / step / "eval_results.json").exists() and (out / step / "model.safetensors").exists()
    assert "PPO" in (out / "step3_rlhf" / "README.md").read_text()
    assert max(m["answer_length"] for m in read_metrics(out / "step3_rlhf")) <= 16
    assert "step3_rlhf: reward" in proc.stdout and "step2_reward_model: accuracy" in proc.stdout


def test_sbatch_runs_the_66b_recipe_in_two_srun_tasks(actor_dir, reward_dir, pair_files, tmp_path):
    """run_66b.sh inside a SLURM job whose srun is faked as 2 local tasks, rerun after its steps 1 and 2 finished (the
    tiny step-3 actor and reward model stand in for their outputs): both are skipped before the libraries load, and
    step 3 runs PPO under ZeRO-3 with a LoRA actor generating while partitioned, its reference and reward model
    partitioned too."""
    out = tmp_path / "run"
    shutil.copytree(actor_dir, out / "step1_sft")
    shutil.copytree(reward_dir, out / "step2_reward_model")
    (out / "step2_reward_model" / "eval_results.json").write_text(json.dumps({"accuracy": 0.5}))
    env = _slurm_env(_fake_slurm_bin(tmp_path, ["localhost"]), "localhost", 1, 2)
    env |= _tiny_run_env(opt_dir=actor_dir, pair_files=_half(pair_files, tmp_path), out=out) | SHORT_ANSWERS
    env |= {"REWARD_MODEL": str(reward_dir), "PYTHON": sys.executable}
    proc = launch(SBATCH, env, "training_scripts/opt/multi_node/run_66b.sh", "--data_split", "2,4,1", "--eval_iters",
                  "1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    for step in ("step1_sft", "step2_reward_model"):
        assert "nothing to resume" in (out / step / "training.log").read_text()
    log = (out / "step3_rlhf" / "training.log").read_text()
    assert "ZeRO-3: the reference and reward model are partitioned" in log and "srun" in log
    train = [m for m in read_metrics(out / "step3_rlhf") if m["split"] == "train"]
    assert len(train) == 2 and all("value_loss" in m for m in train), "16 prompts, 4 per process: PPO's 2 steps"
    assert "step3_rlhf: reward" in proc.stdout


def _gsm8k_folder(root: Path, train: int, test: int) -> Path:
    """A local copy of openai/gsm8k's layout: train and test splits of questions whose worked answers end `#### N`."""
    folder = root / "openai" / "gsm8k"
    folder.mkdir(parents=True)
    questions = [(i, i % 7 + 1) for i in range(train + test)]
    for split, rows in (("train", questions[:train]), ("test", questions[train:])):
        write_jsonl(folder / f"{split}.jsonl", [
            {"question": f"Ann has {a} pens and buys {b} more. How many pens does she have?",
             "answer": f"She has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} pens.\n#### {a + b}"} for a, b in rows])
    return folder


def test_llama3_grpo_launcher_runs_gsm8k_for_real(llama_chat_dir, tmp_path):
    """run_llama3_8b_grpo.sh on a tiny chat model and a local GSM8K of 64 train and 8 test questions, on CPU: GRPO
    with math_answer alone (no reward model), judged on the whole test split, with the launcher's own batch shape:
    2 questions a process and 16 accumulation steps make 32 questions an optimizer step, so 2 steps."""
    out = tmp_path / "grpo"
    data = _gsm8k_folder(tmp_path, 64, 8)
    env = {"MODEL": str(llama_chat_dir), "DATA": str(data), "OUTPUT": str(out),
           "ZERO_STAGE": "0", "NUM_GPUS": "1", "MASTER_PORT": free_port()}
    proc = launch("training_scripts/llama/single_node/run_llama3_8b_grpo.sh", env, "--dtype", "fp32",
                  "--max_prompt_seq_len", "64", "--max_answer_seq_len", "8", "--num_train_epochs", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    figures = json.loads((out / "eval_results.json").read_text())
    assert {"accuracy_before", "accuracy_after", "greedy_accuracy_before", "greedy_accuracy_after"} <= set(figures)
    test = [json.loads(line)["question"] for line in (data / "test.jsonl").read_text().splitlines()]
    judged = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted(r["prompts"] for r in judged if r["step"] == 0) == sorted(test), \
        "judged on the test split, all of it: not on a share of the train questions"
    train = [m for m in read_metrics(out) if m["split"] == "train"]
    assert [m["step"] for m in train] == [1, 2], "64 questions, 32 an optimizer step (a wrong batch or accumulation)"
    assert all("reward_math_answer" in m for m in train)
    assert f"{out.name}: accuracy" in proc.stdout, "the summary line"
