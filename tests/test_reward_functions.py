"""Checkable rewards: the built-ins against hand-made answers, a user's own functions loaded from a file or a module,
their weighted sum with None, every misbehaviour of a function named, and the flags' mistakes refused before torch."""
import sys

import pytest

from utils.errors import UserError
from utils.flags import parse_flags
from utils.rewards.builtin import final_number, flaw, make, math_answer, overlong_penalty
from utils.rewards.combined import RewardFunctions
from utils.rewards.loading import load_reward_function
from utils.rewards.settings import function_weights, remote_weight, reward_model_weight

GSM8K = "Natalia sold 48 clips in April and half as many in May.\nShe sold 48/2 = <<48/2=24>>24 in May.\n#### 72"


@pytest.mark.parametrize("answer, expected, score", [
    ("48 + 24 = 72, so the answer is 72.", GSM8K, 1.0),  # the number after #### (planted: the whole solution compared)
    ("She sold 72 in all, 24 in May.", GSM8K, 0.0),  # the LAST number counts, not any number
    ("The answer is 8.", "8", 1.0),  # a sentence's full stop is not a decimal point
    ("3 plus 5 is 8.", "8.0", 1.0),  # numerically equal
    ("It costs $1,234.", "1234", 1.0),  # $ and thousands commas dropped, in the answer ...
    ("1234", "1,234", 1.0),  # ... and in the column
    ("We owe -3 dollars", "-3", 1.0),
    ("5 minus 8 is -3", "3", 0.0),  # the sign belongs to the number
    ("Expect 10-15", "15", 1.0),  # a hyphen between numbers is no sign (planted: the lookbehind before "-" dropped)
    ("The price is 2.5", "2.50", 1.0),
    ("The price is 2.5", "2.05", 0.0),
    ("Half is 1/2", "0.5", 1.0),
    ("So \\boxed{\\frac{3}{4}}, not 1.", "0.75", 1.0),  # the boxed content wins over the last number
    ("First \\boxed{7}, then \\boxed{72} and 5 more", GSM8K, 1.0),  # the LAST box
    ("\\boxed{x^{2}}", "x^{2}", 1.0),  # nested braces; not numbers, so compared as stripped strings
    ("The answer is eight.", "8", 0.0),  # words are not numbers
    ("I do not know.", "8", 0.0),  # no number at all
    ("", "8", 0.0),
])
def test_math_answer(answer, expected, score):
    assert math_answer(["q"], [answer], answer=[expected]) == [score]


def test_math_answer_does_not_apply_to_a_row_without_an_answer():
    assert math_answer(["q"] * 3, ["8", "8", "8"], answer=["8", None, 8], other=[1, 2, 3]) == [1.0, None, 1.0]


def test_final_number():
    assert [final_number(t) for t in ["x = -3", "f(x)-3", "H2O", "v1.5 or .5", "no digits"]] == [
        "-3", "3", None, ".5", None]


def test_format_matches_the_whole_stripped_answer_across_lines():
    fmt = make("format", format_regex=r"<think>.*</think>\s*<answer>.*</answer>", max_answer_seq_len=8,
               overlong_buffer=None)
    answers = ["<think>a\nb</think>\n<answer>8</answer>\n",  # . crosses the newline; trailing whitespace stripped
               "Sure! <think>a</think><answer>8</answer>",  # the whole answer must match, not a part
               "<think>a</think>"]
    assert fmt(["q"] * 3, answers) == [1.0, 0.0, 0.0]
    with pytest.raises(UserError, match=r"--format_regex '\(' does not compile"):
        make("format", format_regex="(", max_answer_seq_len=8, overlong_buffer=None)


def test_overlong_at_its_boundaries():
    """L_max 16, L_cache 4: free up to 12 tokens, then -(len - 12) / 4, reaching -1 at 16 (planted: the ramp divided
    by L_max, or starting at L_max)."""
    assert [overlong_penalty(n, 16, 4) for n in (0, 12, 13, 14, 16, 17)] == [0, 0, -0.25, -0.5, -1, -1]
    overlong = make("overlong", format_regex=None, max_answer_seq_len=16, overlong_buffer=None)  # default: 16 // 4
    assert overlong(["q"] * 2, ["a", "b"], answer_lengths=[13, 16], answer=["x", "y"]) == [-0.25, -1.0]
    with pytest.raises(UserError, match="--overlong_buffer 17: .* between 1 and 16"):
        make("overlong", format_regex=None, max_answer_seq_len=16, overlong_buffer=17)


def test_flaw_is_the_demo_judge():
    assert flaw(["What is 2 + 2?"] * 3, ["2 + 2 is 4.", "Figure it out yourself, idiot.", ""]) == [1.0, 0.0, 0.0]


MINE = '''
def exact(prompts, answers, *, answer, **kwargs):
    return [float(a == b) for a, b in zip(answers, answer)]

def short(prompts, answers, answer_lengths, bonus=None):
    bonus = bonus or [0.0] * len(answers)
    return [1.0 + b if n < 3 else None for n, b in zip(answer_lengths, bonus)]

def no_answers(prompts):
    return []

def broken(prompts, answers, **kwargs):
    return [1 / 0 for _ in answers]

NOT_A_FUNCTION = 3
'''


@pytest.fixture()
def mine(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(MINE)
    return path


def test_a_users_file_and_module_are_loaded_with_the_columns_they_need(mine, tmp_path, monkeypatch):
    exact = load_reward_function(f"{mine}:exact")
    assert (exact.name, exact.columns, exact.optional, exact.takes_all) == ("exact", ("answer",), (), True)
    short = load_reward_function(f"{mine}:short")
    assert (short.columns, short.optional, short.takes_all) == (("answer_lengths",), ("bonus",), False)
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "checks.py").write_text("def ends(prompts, answers, **kw):\n    return [a.endswith('.') for a in answers]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "pkg", raising=False)
    ends = load_reward_function("pkg.checks:ends")
    assert ends(["q", "q"], ["Yes.", "No"], {}) == [True, False]


@pytest.mark.parametrize("entry, message", [
    ("no_such_builtin", "--reward_funcs no_such_builtin: no such built-in reward function; the built-ins are "
                        "math_answer, format, overlong, flaw"),
    ("missing.py:f", "--reward_funcs missing.py:f: no such file: missing.py"),
    ("{mine}:nothing", "{mine} has no function nothing (it defines: broken, exact, no_answers, short)"),
    ("{mine}:NOT_A_FUNCTION", "NOT_A_FUNCTION is a int, not a function"),
    ("{mine}:no_answers", "no_answers(prompts) cannot be called with prompts and answers; expected f(prompts, "
                          "answers, **columns)"),
    ("{bad}:f", "importing {bad} failed: NameError: name 'undefined_name' is not defined"),
    ("no_such_module_xyz:f", "--reward_funcs no_such_module_xyz:f: no module named no_such_module_xyz"),
    ("json:nothing", "json has no function nothing"),
    ("{mine}:1f", "'1f' after the last ':' is not a function name"),
])
def test_each_loading_mistake_names_the_entry(mine, tmp_path, entry, message):
    bad = tmp_path / "bad.py"
    bad.write_text("x = undefined_name\n")
    entry, message = entry.format(mine=mine, bad=bad), message.format(mine=mine, bad=bad)
    with pytest.raises(UserError) as err:
        load_reward_function(entry)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_weighted_sum_with_none(mine):
    """Weights 2 and 0.5: an answer scores 2 * exact + 0.5 * short, a None adding nothing, and an answer no function
    applies to scores 0 and is counted (planted: None counted as 0 in the mean, or the weights swapped)."""
    rewards = RewardFunctions([load_reward_function(f"{mine}:exact"),
                               load_reward_function(f"{mine}:short")], [2.0, 0.5])
    math_ok = RewardFunctions([load_reward_function("math_answer")], [1.0])
    assert rewards.names == ["exact", "short"] and rewards.weights == [2.0, 0.5]
    totals, values = rewards.score(["q"] * 3, ["a", "b", "c"], {"answer": ["a", "x", "c"], "extra": [0] * 3},
                                   [1, 5, 9])
    assert values == {"exact": [1.0, 0.0, 1.0], "short": [1.0, None, None]}
    assert totals == [2.5, 0.0, 2.0]
    stats = RewardFunctions.stats(values)
    assert stats == {"reward_exact": 2 / 3, "full_marks_exact": 2 / 3, "reward_short": 1.0, "full_marks_short": 1.0,
                     "applied_short": 1 / 3, "unscored_answers": 0.0}
    totals, values = math_ok.score(["q"] * 2, ["8", "8"], {"answer": [None, "9"]}, [1, 1])
    assert totals == [0.0, 0.0] and RewardFunctions.stats(values) == {
        "reward_math_answer": 0.0, "full_marks_math_answer": 0.0, "applied_math_answer": 0.5, "unscored_answers": 1.0}


@pytest.mark.parametrize("returned, message", [
    ("[1.0]", "returned 1 values for 2 answers"),
    ("[1.0, float('nan')]", "returned nan for answer 1; each value must be finite"),
    ("[1.0, float('inf')]", "returned inf for answer 1"),
    ("[1.0, '1']", "returned '1' (a str) for answer 1; each value must be a number or None"),
    ("'10'", "returned a str; it must return a list"),
    ("1.0", "returned a float; it must return a list"),
])
def test_what_a_function_returns_is_checked(tmp_path, returned, message):
    path = tmp_path / "odd.py"
    path.write_text(f"def odd(prompts, answers, **kw):\n    return {returned}\n")
    rewards = RewardFunctions([load_reward_function(f"{path}:odd")], [1.0])
    with pytest.raises(UserError, match=f"reward function odd \\({path}:odd\\) " + message.replace("(", r"\(")
                       .replace(")", r"\)").replace("[", r"\[")):
        rewards.score(["q", "q"], ["a", "b"], {}, [1, 1])


def test_booleans_count_as_one_and_zero_and_a_raising_function_is_one_line(mine, tmp_path):
    path = tmp_path / "flags.py"
    path.write_text("def passed(prompts, answers, **kw):\n    return [True, False]\n")
    assert RewardFunctions([load_reward_function(f"{path}:passed")], [3.0]).score(
        ["q"] * 2, ["a", "b"], {}, [1, 1])[0] == [3.0, 0.0]
    broken = RewardFunctions([load_reward_function(f"{mine}:broken")], [1.0])
    line = MINE.splitlines().index("    return [1 / 0 for _ in answers]") + 1
    with pytest.raises(UserError, match=rf"reward function broken .* raised ZeroDivisionError: division by zero "
                                        rf"\(at {mine}:{line}\)"):
        broken.score(["q"], ["a"], {}, [1])


def test_check_columns(mine):
    rewards = RewardFunctions([load_reward_function("math_answer"), load_reward_function(f"{mine}:short")],
                              [1.0, 1.0])
    rewards.check_columns({"prompt", "answer"})  # answer_lengths is the rollout's, bonus optional
    with pytest.raises(UserError, match=r"reward function math_answer \(math_answer\) needs the column answer, which "
                                        r"the prompt rows lack \(their columns: prompt, solution\)"):
        rewards.check_columns({"prompt", "solution"})
    with pytest.raises(UserError, match="a column named answer_lengths"):
        rewards.check_columns({"prompt", "answer", "answer_lengths"})


def test_only_the_named_columns_reach_a_function_without_kwargs(mine):
    """short takes no **kwargs: it gets answer_lengths and its optional bonus column, and not the rows' other columns,
    which would raise TypeError (planted: every column passed to every function)."""
    rewards = RewardFunctions([load_reward_function(f"{mine}:short")], [1.0])
    assert rewards.score(["q"] * 2, ["a", "b"], {"answer": ["a", "b"], "bonus": [0.5, 0.0]}, [1, 2])[0] == [1.5, 1.0]
    assert rewards.score(["q"], ["a"], {"answer": ["a"]}, [1])[0] == [1.0]


STEP3 = ["--actor_model_name_or_path", "a", "--critic_model_name_or_path", "r", "--output_dir", "o", "--data_path",
         "synthetic"]


def test_weights_split_between_functions_and_the_reward_model():
    args, _ = parse_flags(3, STEP3 + ["--reward_funcs", "math_answer", "flaw", "--reward_weights", "2", "0.5", "3"])
    assert function_weights(args) == [2.0, 0.5] and reward_model_weight(args) == 3.0
    args, _ = parse_flags(3, STEP3 + ["--reward_funcs", "flaw"])
    assert function_weights(args) == [1.0] and reward_model_weight(args) == 1.0
    args, _ = parse_flags(3, STEP3 + ["--reward_funcs", "flaw", "--reward_url", "http://h:1", "--reward_weights", "2",
                                      "0.5", "0.25"])
    assert function_weights(args) == [2.0] and reward_model_weight(args) == 0.5 and remote_weight(args) == 0.25


def test_the_run_builds_its_functions_from_the_flags():
    args, _ = parse_flags(3, STEP3 + ["--reward_funcs", "math_answer", "overlong", "--reward_weights", "2", "1", "5",
                                      "--max_answer_seq_len", "8", "--overlong_buffer", "2"])
    rewards = RewardFunctions.from_flags(args)
    assert rewards.names == ["math_answer", "overlong"] and rewards.weights == [2.0, 1.0]
    totals, _ = rewards.score(["q"] * 2, ["It is 4", "It is 5"], {"answer": ["4", "4"]}, [7, 8])
    assert totals == [2.0 - 0.5, -1.0]  # 2 * 1 + (6 - 7) / 2, and 2 * 0 - 1


@pytest.mark.parametrize("extra, message", [
    (["--reward_funcs", "math"], "--reward_funcs math: no such built-in reward function"),
    (["--reward_funcs", "flaw", "--reward_weights", "1"], "--reward_weights: 1 weights given, 2 expected, one for "
                                                          "each of: the --reward_funcs entry flaw; the reward model's "
                                                          "score"),
    (["--reward_url", "http://host:5000"], "--reward_url and a reward model (--critic_model_name_or_path) both score "
                                           "every answer: say how to weigh them"),
    (["--reward_funcs", "flaw", "--reward_normalization", "z"], "--reward_normalization z shapes a reward model's "
                                                                "scores used alone"),
    (["--reward_funcs", "flaw", "--reward_weights", "1", "nan"], "each weight must be finite"),
    (["--reward_funcs", "format"], "--reward_funcs format: give the pattern"),
    (["--reward_funcs", "format", "--format_regex", "a("], "--format_regex 'a(' does not compile"),
    (["--reward_funcs", "flaw", "--format_regex", "a"], "--format_regex is the pattern of the format reward"),
    (["--reward_funcs", "overlong", "--overlong_buffer", "0"], "--overlong_buffer 0: the penalty ramps"),
    (["--reward_funcs", "overlong", "--overlong_buffer", "300"], "must lie between 1 and 256"),
    (["--overlong_buffer", "8"], "--overlong_buffer sets the overlong penalty's ramp: add overlong"),
    (["--reward_funcs", "nowhere.py:f"], "--reward_funcs nowhere.py:f: no such file: nowhere.py"),
    (["--reward_funcs", "a/b:f"], "'a/b' is neither a .py file nor a package.module name"),
    (["--reward_funcs", "flaw", "pkg.mod:flaw"], "two entries are called flaw (flaw, pkg.mod:flaw)"),
    (["--reward_timeout", "0"], "--reward_timeout 0.0: a request needs more than 0 seconds"),
    (["--reward_retries", "-1"], "--reward_retries -1: the tries after a failed request are 0 or more"),
])
def test_flag_mistakes_are_refused(extra, message):
    with pytest.raises(UserError) as err:
        parse_flags(3, STEP3 + extra)
    assert message in str(err.value)


def test_dpo_does_not_read_the_reward_flags():
    """--algo dpo scores no sampled answers: the flags are named as unread, not checked."""
    _, warnings = parse_flags(3, STEP3 + ["--algo", "dpo", "--reward_funcs", "flaw", "--reward_weights", "1"])
    assert warnings == ["warning: this run (step 3, --algo dpo) does not read --reward_funcs (read by --algo rloo, "
                        "raft, ppo, grpo, online_dpo), --reward_weights (read by --algo rloo, raft, ppo, grpo, online_dpo)"]
