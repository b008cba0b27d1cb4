"""benchmarks/grpo_bench.py's figures, on made-up child results (the benchmark itself runs by `make bench-grpo`,
never here): the accuracy gains and their standard errors by hand, the speed-ups, a held-out set that no trainer,
step 1 included, ever sees; and what it holds equal for TRL: the prompts' token ids under a chat template, the ids
generation stops at, and our rewards as TRL calls them."""
import math
import sys

import pytest
from conftest import ROOT

from utils.models.loading import load_tokenizer

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_trl_grpo  # noqa: E402
import grpo_bench  # noqa: E402

BEFORE = [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]  # 2 of 10 right
AFTER = [1, 0, 1, 1, 1, 0, 0, 0, 0, 0]  # 4 of 10: 3 newly right, 1 lost


def test_gain_and_its_standard_errors_by_hand():
    """SE = sqrt(0.4 * 0.6 / 10 + 0.2 * 0.8 / 10) = sqrt(0.04) = 0.2; paired, with 3 problems right only after and 1
    only before: sqrt(3 + 1 - 2 ** 2 / 10) / 10 = sqrt(3.6) / 10 (catches before and after swapped, or n for n - 1)."""
    figures = grpo_bench.gain(BEFORE, AFTER)
    assert figures["right_before"] == 2 and figures["right_after"] == 4
    assert figures["gain"] == 0.2 and figures["standard_error"] == 0.2
    assert (figures["right_after_only"], figures["right_before_only"]) == (3, 1)
    assert figures["paired_standard_error"] == round(math.sqrt(3.6) / 10, 4)


def test_report_on_fake_child_results():
    """prompts/s over the training loop's seconds, the rest of the split, each of our columns against TRL's, and
    ours - TRL's final accuracy in standard errors: (0.4 - 0.2) / sqrt(0.4 * 0.6 / 10 + 0.2 * 0.8 / 10) = 1."""
    def run(seconds: float, rewards: list[float]) -> dict:
        return {"train_s": seconds, "split_s": {"generate": seconds / 2, "score": 1.0}, "generated_tokens": 800,
                "train_rewards": rewards}

    runs = {name: grpo_bench.add_rates(run(seconds, [0.0, 0.5, 0.5, 1.0]), 40)
            for name, seconds in (("ours", 10.0), ("unshared", 20.0), ("trl", 16.0))}
    assert [runs[name]["prompts_per_s"] for name in runs] == [4.0, 2.0, 2.5]
    assert runs["ours"]["split_s"]["rest"] == 4.0 and runs["ours"]["split_share"]["score"] == 0.1
    assert runs["ours"]["train_reward_first_quarter"] == 0.0 and runs["ours"]["train_reward_last_quarter"] == 1.0
    assert grpo_bench.speedups(runs) == {"speedup_vs_trl_grpo": 1.6, "unshared_speedup_vs_trl_grpo": 0.8,
                                         "speedup_vs_unshared": 2.0}

    def answers(right: list[int]) -> dict:
        return {"sampled": right, "greedy": right, "sampled_answer_tokens": 7.0, "greedy_answer_tokens": 6.5}

    report = grpo_bench.accuracy_report(answers(BEFORE), {"ours": answers(AFTER), "unshared": answers(AFTER),
                                                          "trl": answers(BEFORE)})
    assert report["problems"] == 10 and report["before"]["greedy"] == {"right": 2, "accuracy": 0.2,
                                                                       "answer_tokens": 6.5}
    assert report["trainers"]["ours"]["sampled"]["gain"] == 0.2 and report["trainers"]["trl"]["greedy"]["gain"] == 0
    assert report["ours_minus_trl_in_standard_errors"] == {"sampled": 1.0, "greedy": 1.0}


def test_held_out_problems_are_never_trained_on():
    """Neither GRPO's problems nor step 1's questions include a held-out prompt, and each set has the size asked."""
    args = grpo_bench.parse_args(["--steps", "6", "--prompts_per_step", "4", "--eval_prompts", "60",
                                  "--sft_rows", "80"])
    train, held_out = grpo_bench.split_problems(args)
    held = {row["prompt"] for row in held_out}
    assert len(train) == 24 and len(held) == len(held_out) == 60
    assert not held & {row["prompt"] for row in train}
    assert all(row["answer"] for row in held_out)
    sft, left_out = grpo_bench.sft_rows(held_out, args)
    assert len(sft) == 80 and not held & {row["prompt"] for row in sft}
    assert all(grpo_bench.BARE_SUM.fullmatch(row["prompt"]) for row in sft)


def answers(right: list[int]) -> dict:
    return {"sampled": right, "greedy": right, "sampled_answer_tokens": 7.0, "greedy_answer_tokens": 6.5}


def test_ours_and_trl_alone_report_without_unshared(capsys):
    """--trainers trl ours (the SmolLM2 comparison): the columns in the harness's order, no unshared figure in the
    speed-ups, the accuracies or the table; ours alone has nothing to compare with TRL's (catches a lookup of
    runs["unshared"] or runs["trl"] left unconditional)."""
    assert grpo_bench.parse_args(["--trainers", "trl", "ours"]).trainers == ["ours", "trl"]
    runs = {name: grpo_bench.add_rates({"train_s": seconds, "split_s": {"generate": 1.0, "score": 1.0},
                                        "generated_tokens": 80, "train_rewards": [0.5], "steps": 4,
                                        "peak_rss_mb": 600.0}, 40)
            for name, seconds in (("ours", 10.0), ("trl", 16.0))}
    assert grpo_bench.speedups(runs) == {"speedup_vs_trl_grpo": 1.6}
    report = grpo_bench.accuracy_report(answers(BEFORE), {"ours": answers(AFTER), "trl": answers(BEFORE)})
    assert set(report["trainers"]) == {"ours", "trl"}
    assert report["ours_minus_trl_in_standard_errors"] == {"sampled": 1.0, "greedy": 1.0}
    grpo_bench.print_table(runs, report)
    rows = capsys.readouterr().out.splitlines()[2:]
    assert [row.split()[0] for row in rows] == ["ours", "trl"] and rows[0].endswith("1.60x")
    alone = grpo_bench.accuracy_report(answers(BEFORE), {"ours": answers(AFTER)})
    assert "ours_minus_trl_in_standard_errors" not in alone and grpo_bench.speedups({"ours": runs["ours"]}) == {}


@pytest.mark.parametrize("flags, message", [
    (["--template", "chat"], "--template chat needs --actor"),
    (["--actor", "no/such/folder"], "no config.json"),
    (["--reward_funcs", "overlong"], "must hold math_answer"),
    (["--overlong_buffer", "4"], "add overlong to --reward_funcs"),
    (["--reward_funcs", "math_answer", "overlong", "--overlong_buffer", "25"], "between 1 and --max_new_tokens 24"),
])
def test_flags_that_cannot_go_together_stop_at_once(flags, message):
    with pytest.raises(SystemExit, match=message):
        grpo_bench.parse_args(flags)


def test_overlong_buffer_defaults_to_ours():
    """Both trainers get one explicit buffer: ours' default, a quarter of the answer budget (48 // 4)."""
    args = grpo_bench.parse_args(["--reward_funcs", "math_answer", "overlong", "--max_new_tokens", "48"])
    assert args.overlong_buffer == 12


def test_trl_calls_our_rewards_with_token_counts():
    """TRL passes each completion's token ids, EOS included, as ours counts answer_lengths: with 8 new tokens and a
    buffer of 4, lengths 3, 6 and 8 cost 0, -0.5 and -1 (catches characters counted for tokens: "It is 7" is 7
    characters, -0.75), and math_answer reads the rows' answer column. Named as ours, as TRL logs them."""
    spec = {"reward_funcs": ["math_answer", "overlong"], "max_new_tokens": 8, "overlong_buffer": 4}
    functions = bench_trl_grpo.reward_functions(spec)
    assert [f.__name__ for f in functions] == ["math_answer", "overlong"]
    called = dict(prompts=["p"] * 3, completions=["8", "It is 7", "9"], completion_ids=[[5] * 3, [5] * 6, [5] * 8],
                  answer=["8", "7", "5"], trainer_state=None)
    assert [f(**called) for f in functions] == [[1.0, 1.0, 0.0], [0.0, -0.5, -1.0]]


def test_chat_prompts_reach_trl_as_our_token_ids(llama_chat_dir, tmp_path):
    """The harness's chat-template prompts, as TRL's GRPOTrainer tokenizes them for generation, are our token ids:
    one BOS (the template writes it and the tokenizer adds it, so format_prompt drops the written one; catches a
    doubled BOS), and TRL stops generating at our EOS alone."""
    args = grpo_bench.parse_args(["--actor", str(llama_chat_dir), "--template", "chat", "--steps", "2",
                                  "--prompts_per_step", "2", "--k", "2", "--eval_prompts", "4"])
    train, _ = grpo_bench.split_problems(args)
    tokenizer = load_tokenizer(str(llama_chat_dir), "end", append_eos=False)
    prompts = grpo_bench.formatted(train, "chat", tokenizer)
    ours = grpo_bench.check_prompts(prompts, tokenizer, args.max_prompt_len)
    assert all(ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id for ids in ours)
    assert all(text.endswith("<|assistant|>") for text in prompts)
    trainer = bench_trl_grpo.build_trainer(grpo_bench.trl_spec(prompts, train, llama_chat_dir, args, tmp_path), [])
    assert bench_trl_grpo.prompt_ids(trainer, prompts) == ours
    assert trainer.eos_token_ids == [tokenizer.eos_token_id]
