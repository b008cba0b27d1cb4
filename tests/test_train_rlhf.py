"""Step 3 end to end on CPU, on a tiny actor and reward model: RLOO and RAFT raise an injected rule reward, a large
kl_ctl holds the policy at the reference, seeded runs repeat exactly, the export generates, and configuration
mistakes stop with one line before any model is loaded."""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from conftest import CPU_ENV, ROOT, STEP3, read_metrics, run_step, run_step1, run_step3
from utils.errors import UserError
from utils.flags import step_parser
from utils.objectives.policy_checks import check_flags, check_models

# The answer's reward: how many times it writes the letter e, which varies from answer to answer even under a random
# policy: a rule that moves within a few updates from a random start, where a real reward model would need a trained
# policy.
LETTER_E = """
    import torch
    import utils.objectives.policy as policy

    def rule(reward_model, reward_tokenizer, prompts, rollout, k, template, batch_size=32):
        return torch.tensor([float(answer.count("e")) for answer in rollout.answers])

    policy.reward_scores = rule
"""


@pytest.fixture(scope="module")
def reward_dir(opt_dir, tmp_path_factory):
    """A reward model with a (random) trained-looking head: the injected rule replaces its scores."""
    out = tmp_path_factory.mktemp("rm")
    tokenizer = AutoTokenizer.from_pretrained(opt_dir)
    tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    model = AutoModelForSequenceClassification.from_pretrained(opt_dir, num_labels=1)
    model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def actor_dir(opt_dir, tmp_path_factory):
    """A briefly fine-tuned policy: it ends about half of its answers, so that RAFT has finished answers to keep."""
    out = tmp_path_factory.mktemp("sft")
    run_step1(["--model_name_or_path", opt_dir, "--data_path", "synthetic:400", "--data_split", "1,0,0",
               "--num_train_epochs", 2, "--learning_rate", 3e-3, "--max_seq_len", 64, "--dropout", 0.0, "--dtype",
               "fp32", "--output_dir", out])
    return out


@pytest.fixture(scope="module")
def inject(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inject")
    (folder / "sitecustomize.py").write_text(textwrap.dedent(LETTER_E))
    return {"PYTHONPATH": f"{folder}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _args(actor, reward, out, *extra):
    return ["--actor_model_name_or_path", actor, "--critic_model_name_or_path", reward, "--data_path", "synthetic:200",
            "--data_split", "0,0,1", "--per_device_generation_batch_size", 4, "--per_device_training_batch_size", 4,
            "--num_generations", 4, "--max_prompt_seq_len", 32, "--max_answer_seq_len", 16, "--actor_learning_rate",
            1e-2, "--actor_dropout", 0.0, "--dtype", "fp32", "--eval_iters", 1, "--per_device_eval_batch_size", 8,
            "--lr_scheduler_type", "constant", "--output_dir", out, *extra]


def _train_rewards(out):
    return [m["reward"] for m in read_metrics(out) if m["split"] == "train"]


@pytest.mark.parametrize("algo", ["rloo", "raft"])
def test_two_processes_zero2_take_the_step_of_one_on_fixed_experience(actor_dir, reward_dir, tmp_path, algo):
    """The loss is normalized over the answer tokens of all processes: how the prompts are split changes nothing."""
    weights = []
    for nproc in (1, 2):
        out = tmp_path / f"{nproc}"
        out.mkdir()
        run_step(ROOT / "tests" / "step3_fixed_experience.py",
                 _args(actor_dir, reward_dir, out, "--algo", algo, "--actor_zero_stage", 2,
                       "--per_device_generation_batch_size", 8 // nproc, "--per_device_training_batch_size",
                       8 // nproc, "--max_answer_seq_len", 12, "--actor_learning_rate", 1e-3), nproc=nproc)
        weights.append(torch.load(out / "weights.pt"))
    (one, two), start = (w["weights"] for w in weights), load_file(actor_dir / "model.safetensors")
    assert torch.equal(weights[0]["scores"], weights[1]["scores"]) and weights[0]["scores"].std() > 0
    moved = max((one[name] - start[name]).abs().max().item() for name in start if name in one)
    assert moved > 5e-4, "the step changed the weights (Adam's first step moves a weight by up to the lr)"
    assert max((one[name] - two[name]).abs().max().item() for name in one) < 1e-5


@pytest.mark.parametrize("algo", ["rloo", "raft"])
def test_rloo_and_raft_raise_an_injected_reward(actor_dir, reward_dir, inject, tmp_path, algo):
    out = tmp_path / algo
    proc = run_step3(_args(actor_dir, reward_dir, out, "--algo", algo, "--kl_ctl", 0.0, "--clip_reward_value", 100),
                     env=inject)
    rewards = _train_rewards(out)
    assert len(rewards) == 50  # 200 prompts, 4 a step
    assert sum(rewards[-10:]) / 10 > sum(rewards[:10]) / 10 + 0.5, rewards
    final = json.loads((out / "eval_results.json").read_text())
    if final["distinct2"] < final["distinct2_before"] / 2:  # the rule pays for repeating one letter: a collapse
        assert "WARNING: distinct-2 fell" in proc.stdout
    assert {"reward", "reward_before", "kl_to_reference", "eos_share", "distinct2", "win_rate"} <= final.keys()
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {0, 50} and all("sampled" in s and "greedy" in s for s in samples)
    assert "RLHF policy" in (out / "README.md").read_text() and algo.upper() in (out / "README.md").read_text()
    lm = pipeline("text-generation", model=str(out), device="cpu")
    assert lm(" Human: Hi? Assistant:", max_new_tokens=4, do_sample=False)[0]["generated_text"]


def test_a_large_kl_ctl_holds_the_policy_near_the_reference_and_seeded_runs_repeat(actor_dir, reward_dir, inject,
                                                                                   tmp_path):
    """At a learning rate where the rule alone drags the policy tens of nats away, kl_ctl 100 keeps it within a
    few; (noise alone moves a policy under Adam's fixed step, so no penalty holds it at exactly 0)."""
    runs = {}
    for name, kl_ctl in (("free", 0.0), ("held", 100.0), ("again", 100.0)):
        runs[name] = tmp_path / name
        run_step3(_args(actor_dir, reward_dir, runs[name], "--kl_ctl", kl_ctl, "--clip_reward_value", 100,
                        "--data_path", "synthetic:60", "--eval_data_path", "synthetic:300", "--eval_iters", 2),
                  env=inject)
    kl = {name: json.loads((out / "eval_results.json").read_text())["kl_to_reference"] for name, out in runs.items()}
    assert kl["free"] > 10 and kl["held"] < kl["free"] / 5, kl
    drop = ("time", "elapsed_s", "tokens_per_s", "mfu", "generate_s", "score_s", "reference_s",
            "generated_tokens_per_s")
    a, b = ([{k: v for k, v in m.items() if k not in drop} for m in read_metrics(runs[name])] for name in ("held",
                                                                                                         "again"))
    assert a == b
    weights = [load_file(runs[name] / "model.safetensors") for name in ("held", "again")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize("extra, message", [
    (["--num_generations", 1], "RLOO's baseline"),
    (["--temperature", 0], "--temperature 0"),
    (["--top_p", 0.9], "RLOO samples purely"),
    (["--actor_dropout", 0.1], "--actor_dropout 0.1"),
    (["--per_device_training_batch_size", 2], "give both the same number of prompts"),
    (["--ppo_epochs", 2], "one update per rollout"),
])
def test_flag_mistakes_are_refused(opt_dir, reward_dir, extra, message):
    args = step_parser(3).parse_args([str(a) for a in _args(opt_dir, reward_dir, "unused") + extra])
    with pytest.raises(UserError, match=message):
        check_flags(args)


def test_model_mistakes_are_refused_from_their_configs(opt_dir, reward_dir, tmp_path):
    def check(actor, reward, *extra):
        args = step_parser(3).parse_args([str(a) for a in _args(actor, reward, "unused", *extra)])
        with pytest.raises(UserError) as err:
            check_models(args)
        return str(err.value)

    assert "is a OPTForCausalLM, not a reward model" in check(opt_dir, opt_dir)
    assert "the actor is a causal LM" in check(reward_dir, reward_dir)
    assert "holds no normalization constants" in check(opt_dir, reward_dir, "--reward_normalization", "z")
    assert "is over the actor's 1024 positions" in check(opt_dir, reward_dir, "--max_prompt_seq_len", 1020)
    trained = tmp_path / "trained_on_lmflow"
    shutil.copytree(reward_dir, trained)
    (trained / "training_args.json").write_text(json.dumps({"template": "lmflow"}))
    assert "pass --template lmflow" in check(opt_dir, trained)
    two = tmp_path / "two_labels"
    AutoModelForSequenceClassification.from_pretrained(opt_dir, num_labels=2).save_pretrained(two)
    assert "has 2 labels" in check(opt_dir, two)


def test_the_command_line_exits_2_with_one_line(opt_dir, reward_dir, tmp_path):
    proc = run_step3(_args(opt_dir, opt_dir, tmp_path / "out"), check=False)
    assert proc.returncode == 2 and "error: " in proc.stderr and "not a reward model" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()  # stopped before the run began
    headless = tmp_path / "headless"
    AutoModelForSequenceClassification.from_pretrained(opt_dir, num_labels=1).save_pretrained(
        headless, state_dict={k: v for k, v in AutoModelForSequenceClassification.from_pretrained(
            opt_dir, num_labels=1).state_dict().items() if not k.startswith("score")})
    AutoTokenizer.from_pretrained(opt_dir).save_pretrained(headless)
    proc = run_step3(_args(opt_dir, headless, tmp_path / "out2"), check=False)
    assert proc.returncode == 2 and "has no trained score head" in proc.stderr
    proc = run_step3(_args(opt_dir, reward_dir, tmp_path / "out3", "--data_path", "synthetic:3"), check=False)
    assert proc.returncode == 2 and "prompts: fewer than one rollout" in proc.stderr


def _start(args, inject):
    """Step 3 in a process group of its own, so that a signal reaches it as it reaches a job."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")} | CPU_ENV | inject
    return subprocess.Popen([sys.executable, str(STEP3), *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def _wait_until(done, proc, timeout=300):
    deadline = time.time() + timeout
    while True:
        try:
            if done():
                return
        except (OSError, json.JSONDecodeError):  # not written yet, or a line half-written
            pass
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.01)


def test_a_killed_run_resumes_and_replays_the_same_rollouts(actor_dir, reward_dir, inject, tmp_path):
    """SIGKILL after the step-4 checkpoint, then --resume: the rollouts after it are sampled again from the same
    seeds, so the run ends with the uninterrupted run's weights."""
    common = ["--kl_ctl", 0.05, "--clip_reward_value", 100, "--data_path", "synthetic:40", "--save_interval", 4]
    whole = tmp_path / "whole"
    run_step3(_args(actor_dir, reward_dir, whole, *common), env=inject)
    out = tmp_path / "killed"
    proc = _start(_args(actor_dir, reward_dir, out, *common), inject)
    _wait_until(lambda: (out / "checkpoints" / "latest").read_text() == "step4", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "eval_results.json").exists()
    run_step3(_args(actor_dir, reward_dir, out, *common, "--resume"), env=inject)
    ours, theirs = load_file(out / "model.safetensors"), load_file(whole / "model.safetensors")
    assert all(torch.allclose(ours[k], theirs[k], atol=1e-5) for k in theirs)
    rewards = {m["step"]: m["reward"] for m in read_metrics(out) if m["split"] == "train"}
    assert rewards == {m["step"]: m["reward"] for m in read_metrics(whole) if m["split"] == "train"}
    final, again = (json.loads((d / "eval_results.json").read_text()) for d in (out, whole))
    assert final["reward_before"] == again["reward_before"]  # the step-0 evaluation survived the kill


def test_sigterm_finishes_the_rollout_saves_and_exits_75(actor_dir, reward_dir, inject, tmp_path):
    out = tmp_path / "run"
    proc = _start(_args(actor_dir, reward_dir, out), inject)
    _wait_until(lambda: any(m["split"] == "train" for m in read_metrics(out)), proc)
    os.killpg(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 75 and "preempted: checkpoint saved at step" in stderr, stderr[-3000:]
    step = int((out / "checkpoints" / "latest").read_text().removeprefix("step"))
    assert 1 <= step < 50
    for other, message in ((["--num_generations", 2], "num generations 4, this run has 2"),
                           (["--algo", "raft"], "algo rloo, this run has raft")):
        refused = run_step3(_args(actor_dir, reward_dir, out, "--resume", *other), env=inject, check=False)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr[-2000:]
    run_step3(_args(actor_dir, reward_dir, out, "--resume"), env=inject)
    assert [m["step"] for m in read_metrics(out) if m["split"] == "train"] == list(range(1, 51))
