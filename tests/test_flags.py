"""The flags' defaults and rules: built-in data only when no data flag is given, and every flag given that the run
will not read named in one warning line (or refused where ignoring it would change the run)."""
import pytest
from transformers import AutoTokenizer, SchedulerType

from conftest import ROOT, STEP3, entrypoint, main_exits, rlhf_args, write_jsonl
from utils.data.splits import DataSpec, load_rows
from utils.data.sources import SFT_FIELDS
from utils.errors import UserError
from utils.evaluation.scoring import DTYPES
from utils.flags import ALGOS, DATA_FLAGS, READ_BY, SCHEDULERS, parse_flags, step_parser
from utils.models.model_card import model_card

BASE = {1: ["--model_name_or_path", "m", "--output_dir", "o"], 2: ["--model_name_or_path", "m", "--output_dir", "o"],
        3: ["--actor_model_name_or_path", "a", "--critic_model_name_or_path", "r", "--output_dir", "o"]}
DEMO_WARNING = "this run trains on the built-in demo data (--data_path synthetic)"


@pytest.mark.parametrize("step", [1, 2, 3])
def test_demo_data_only_without_any_data_flag(step, tmp_path):
    args, warnings = parse_flags(step, BASE[step])
    assert args.data_path == ["synthetic"] and sum(DEMO_WARNING in w for w in warnings) == 1
    mine = str(write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r"}] * 4))
    args, warnings = parse_flags(step, BASE[step] + ["--data_path", mine])
    assert args.data_path == [mine] and not any(DEMO_WARNING in w for w in warnings)
    with pytest.raises(UserError, match="no training data: give --data_path"):
        parse_flags(step, BASE[step] + ["--eval_data_path", mine])


def test_step1_sft_only_data_alone_trains_on_it(tmp_path):
    rows = [{"prompt": f"q{i}", "chosen": "a"} for i in range(20)]
    path = str(write_jsonl(tmp_path / "sft.jsonl", rows))
    args, warnings = parse_flags(1, BASE[1] + ["--sft_only_data_path", path])
    assert args.data_path == [] and warnings == []
    train, evals, report = load_rows(DataSpec.from_args(args, phase=0, fields=SFT_FIELDS))
    assert len(train) + len(evals) == 20 and list(report.rows_read) == [path]


def test_step3_prompts_alone_are_exactly_what_it_trains_on(opt_dir, reward_dir, tmp_path, monkeypatch, capsys):
    """--prompt_data_path alone: 10 prompts, 9 to train on and 1 held out, and no built-in rows beside them. The run
    stops, as it must, because 9 prompts do not fill one rollout of 16; its log names the one source."""
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Question {i}?"} for i in range(10)])
    args = [a for a in rlhf_args(opt_dir, reward_dir, tmp_path / "out", "--prompt_data_path", prompts,
                                 "--per_device_generation_batch_size", 16, "--per_device_training_batch_size", 16)]
    at = args.index("--data_path")
    del args[at:at + 4]  # rlhf_args' --data_path synthetic:200 --data_split 0,0,1
    code, log, stderr = main_exits(STEP3, args, monkeypatch, capsys)
    assert code == 2 and "error: 9 prompts: fewer than one rollout of 16" in stderr, stderr
    assert f"data: {prompts} [train 10] -> train 9 (all), eval 1 (--eval_fraction 0.1 held out)" in log
    assert "synthetic" not in log


def test_the_model_card_names_the_sources_trained_on(opt_dir):
    tokenizer = AutoTokenizer.from_pretrained(opt_dir)
    args, _ = parse_flags(3, BASE[3] + ["--prompt_data_path", "my_prompts.jsonl"])
    assert "| data | my_prompts.jsonl (all rows) |" in model_card(args, {}, tokenizer, 1, "rlhf")
    args, _ = parse_flags(1, BASE[1] + ["--data_path", "Dahoas/rm-static", "--sft_only_data_path", "sft.jsonl"])
    card = model_card(args, {}, tokenizer, 1, "sft")
    assert "| data | Dahoas/rm-static (split `train`, --data_split 2,4,4); sft.jsonl (all rows) |" in card


def test_a_given_flag_the_run_does_not_read_is_named_in_one_line():
    _, warnings = parse_flags(3, BASE[3] + ["--algo", "raft", "--kl_ctl", "0.2", "--beta=0.3", "--raft_selection",
                                            "global", "--add_eot_token", "--gamma", "0.9"])
    assert warnings[1:] == ["warning: this run (step 3, --algo raft) does not read --add_eot_token (read by step 1 "
                            "and step 2), --kl_ctl (read by --algo rloo, ppo, grpo), --gamma (read by --algo ppo), --beta "
                            "(read by --algo dpo, online_dpo)"]
    _, warnings = parse_flags(3, BASE[3] + ["--algo", "ppo", "--kl_ctl", "0.2", "--gamma", "0.9", "--cliprange",
                                            "0.1", "--critic_learning_rate", "1e-5", "--data_path", "synthetic"])
    assert warnings == [], "every flag given is read by PPO"
    _, warnings = parse_flags(1, BASE[1] + ["--add_eot_token", "--compute_fp32_loss", "--data_path", "synthetic"])
    assert warnings == []
    _, warnings = parse_flags(3, BASE[3] + ["--algo", "online_dpo", "--cliprange", "0.1", "--data_path", "x"])
    assert warnings == ["warning: this run (step 3, --algo online_dpo) does not read --cliprange (read by --algo ppo, grpo)"]


def test_ignoring_normalization_under_online_dpo_would_change_the_run_so_it_is_refused():
    with pytest.raises(UserError, match="--reward_normalization z: online DPO pairs"):
        parse_flags(3, BASE[3] + ["--algo", "online_dpo", "--reward_normalization", "z"])
    _, warnings = parse_flags(3, BASE[3] + ["--algo", "dpo", "--reward_normalization", "z"])
    assert "--reward_normalization (read by --algo rloo, raft, ppo, grpo)" in warnings[-1], "DPO's rewards only evaluate"


def test_the_rule_names_real_flags_and_runs():
    runs = {"step 1", "step 2", *ALGOS}
    for name, readers in READ_BY.items():
        assert readers <= runs, name
        steps = {int(r[-1]) for r in readers if r.startswith("step")} | ({3} if readers & set(ALGOS) else set())
        for step in steps or {3}:
            assert name in vars(step_parser(step).parse_args(BASE[step])), (name, step)
    assert set(DATA_FLAGS) == {a.dest for s in (1, 2, 3) for a in step_parser(s)._actions if a.dest.endswith(
        "data_path")}


def test_scheduler_names_are_transformers_own():
    assert sorted(SCHEDULERS) == sorted(s.value for s in SchedulerType)



def test_rw_eval_offers_the_scorers_dtypes():
    parser = entrypoint(ROOT / "rw_eval.py")._parser()
    assert sorted(next(a.choices for a in parser._actions if a.dest == "dtype")) == sorted(DTYPES)
