"""Step 3 end to end on CPU, on a tiny actor and reward model: RLOO, RAFT and PPO raise an injected rule reward,
PPO's critic learns, a large kl_ctl holds the policy at the reference, seeded runs repeat exactly, the export
generates, and configuration mistakes stop with one line before any model is loaded."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from conftest import STEP3, main_exits, read_metrics, rlhf_args, run_step3
from utils.errors import UserError
from utils.flags import parse_flags, step_parser
from utils.objectives.model_checks import check_models
from utils.objectives.policy_checks import check_flags


def _train_rewards(out):
    return [m["reward"] for m in read_metrics(out) if m["split"] == "train"]


@pytest.mark.parametrize("algo", ["rloo", "raft"])
def test_rloo_and_raft_raise_an_injected_reward(actor_dir, reward_dir, inject, tmp_path, algo):
    out = tmp_path / algo
    proc = run_step3(rlhf_args(actor_dir, reward_dir, out, "--algo", algo, "--kl_ctl", 0.0, "--clip_reward_value", 100),
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


def test_ppo_raises_an_injected_reward_and_its_critic_learns_from_fixed_experience(actor_dir, reward_dir, inject,
                                                                                   tmp_path):
    """2 rollouts sampled, then 4 epochs over them: 8 steps of actor and critic per 8 prompts."""
    out = tmp_path / "ppo"
    run_step3(rlhf_args(actor_dir, reward_dir, out, "--algo", "ppo", "--kl_ctl", 0.0, "--clip_reward_value", 100,
                    "--data_path", "synthetic:80", "--generation_batches", 2, "--ppo_epochs", 4,
                    "--critic_learning_rate", 3e-3), env=inject)
    train = [m for m in read_metrics(out) if m["split"] == "train"]
    assert len(train) == 80 and [m["ppo_epoch"] for m in train[:8]] == [0, 0, 1, 1, 2, 2, 3, 3]
    groups = [train[i:i + 8] for i in range(0, 80, 8)]
    sampled = [(g[0]["reward"] + g[1]["reward"]) / 2 for g in groups]  # each group's rollouts, as sampled
    assert sum(sampled[-3:]) / 3 > sampled[0] + 0.5, sampled
    falls = [g[6]["value_loss"] + g[7]["value_loss"] < g[0]["value_loss"] + g[1]["value_loss"] for g in groups]
    assert sum(falls) >= 8, [(g[0]["value_loss"], g[7]["value_loss"]) for g in groups]
    assert train[0]["ratio_max"] == 1.0, "the first pass over fresh experience is on-policy"
    assert "PPO" in (out / "README.md").read_text()


def test_a_large_kl_ctl_holds_the_policy_near_the_reference_and_seeded_runs_repeat(actor_dir, reward_dir, inject,
                                                                                   tmp_path):
    """At a learning rate where the rule alone drags the policy tens of nats away, kl_ctl 100 keeps it within a
    few; (noise alone moves a policy under Adam's fixed step, so no penalty holds it at exactly 0)."""
    runs = {}
    for name, kl_ctl in (("free", 0.0), ("held", 100.0), ("again", 100.0)):
        runs[name] = tmp_path / name
        run_step3(rlhf_args(actor_dir, reward_dir, runs[name], "--kl_ctl", kl_ctl, "--clip_reward_value", 100,
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
    (["--top_p", 0.9], "RLOO and PPO sample purely"),
    (["--algo", "ppo", "--top_k", 5], "RLOO and PPO sample purely"),
    (["--actor_dropout", 0.1], "--actor_dropout 0.1"),
    (["--algo", "ppo", "--actor_dropout", 0.1], "--actor_dropout 0.1"),
    (["--per_device_training_batch_size", 2], "give both the same number of prompts"),
    (["--ppo_epochs", 2], "one update per rollout"),
    (["--algo", "ppo", "--lam", 1.5], "--lam 1.5 must lie between 0 and 1"),
    (["--unsupervised_dataset_name", "wikitext"], "--unsupervised_dataset_name: the pretraining"),
    (["--enable_test_mode"], "--enable_test_mode: a run stops early"),
])
def test_flag_mistakes_are_refused(opt_dir, reward_dir, extra, message):
    args = step_parser(3).parse_args([str(a) for a in rlhf_args(opt_dir, reward_dir, "unused") + extra])
    with pytest.raises(UserError, match=message):
        check_flags(args)


def test_deepspeed_chats_own_command_line_runs(actor_dir, reward_dir, tmp_path):
    """DeepSpeed-Chat's OPT-1.3b single-node step-3 command, flag for flag, on the tiny models and synthetic prompts
    (its data is on the hub), with --algo ppo, DeepSpeed-Chat's algorithm: what has no counterpart is said."""
    out = tmp_path / "dschat"
    proc = run_step3(["--data_path", "synthetic:40", "--data_split", "2,4,4", "--actor_model_name_or_path", actor_dir,
                      "--critic_model_name_or_path", reward_dir, "--num_padding_at_beginning", 1,
                      "--per_device_generation_batch_size", 4, "--per_device_training_batch_size", 4,
                      "--generation_batches", 1, "--ppo_epochs", 1, "--max_answer_seq_len", 256,
                      "--max_prompt_seq_len", 256, "--actor_learning_rate", 9.65e-6, "--critic_learning_rate", 5e-6,
                      "--num_train_epochs", 1, "--lr_scheduler_type", "cosine", "--gradient_accumulation_steps", 1,
                      "--actor_dropout", 0.0, "--num_warmup_steps", 100, "--deepspeed", "--seed", 1234,
                      "--enable_hybrid_engine", "--actor_zero_stage", 2, "--critic_zero_stage", 2, "--enable_ema",
                      "--output_dir", out, "--enable_tensorboard", "--tensorboard_path", out, "--algo", "ppo",
                      "--eval_iters", 1, "--per_device_eval_batch_size", 4])
    assert ("warning: this run (step 3, --algo ppo) does not read --num_padding_at_beginning (read by step 2), "
            "--enable_hybrid_engine (generation uses Hugging Face generate), --enable_ema (no EMA copy of the actor "
            "is kept; the exported actor is the trained one)\n") in proc.stdout
    assert (out / "eval_results.json").exists() and "PPO" in (out / "README.md").read_text()
    dschat = [str(a) for a in rlhf_args(actor_dir, reward_dir, "x", "--critic_learning_rate", 5e-6,
                                        "--actor_lora_dim", 128, "--print_answers")]
    args, warnings = parse_flags(3, dschat)
    assert warnings == ["warning: this run (step 3, --algo rloo) does not read --critic_learning_rate (read by --algo "
                        "ppo), --print_answers (every held-out answer goes to samples.jsonl instead)"]
    assert args.lora_dim == 128


def test_model_mistakes_are_refused_from_their_configs(opt_dir, reward_dir, tmp_path):
    def check(actor, reward, *extra):
        args = step_parser(3).parse_args([str(a) for a in rlhf_args(actor, reward, "unused", *extra)])
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
    other = tmp_path / "other_tokenizer"  # PPO's critic reads the actor's ids: a shuffled vocabulary is refused
    shutil.copytree(reward_dir, other)
    tokenizer = json.loads((other / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    first, second = sorted(vocab, key=vocab.get)[10:12]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    (other / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert "2 of the actor's 600 tokens have another id" in check(opt_dir, other, "--algo", "ppo")


def test_the_command_line_exits_2_with_one_line(opt_dir, reward_dir, tmp_path, monkeypatch, capsys):
    proc = run_step3(rlhf_args(opt_dir, opt_dir, tmp_path / "out"), check=False)
    assert proc.returncode == 2 and "error: " in proc.stderr and "not a reward model" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()  # stopped before the run began
    headless = tmp_path / "headless"
    AutoModelForSequenceClassification.from_pretrained(opt_dir, num_labels=1).save_pretrained(
        headless, state_dict={k: v for k, v in AutoModelForSequenceClassification.from_pretrained(
            opt_dir, num_labels=1).state_dict().items() if not k.startswith("score")})
    AutoTokenizer.from_pretrained(opt_dir).save_pretrained(headless)
    for reward, extra, message in [
            (headless, [], "has no trained score head"),
            (reward_dir, ["--data_path", "synthetic:3"], "prompts: fewer than one rollout"),
            (reward_dir, ["--data_path", "synthetic:6", "--algo", "ppo", "--generation_batches", 2],
             "prompts: fewer than the --generation_batches 2 rollouts")]:
        code, _, stderr = main_exits(STEP3, rlhf_args(opt_dir, reward, tmp_path / "out2", *extra), monkeypatch, capsys)
        assert code == 2 and message in stderr, stderr
