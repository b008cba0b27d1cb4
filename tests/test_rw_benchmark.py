"""rw_eval.py --benchmark: RewardBench's rules and best-of-N sets against hand computations, ties, McNemar's test,
two tiny exports side by side, items cut as step 2 cuts them, and every scoring path against pipeline()."""
import json

import pytest
import torch
from conftest import ROOT, main_exits, run_here, write_jsonl
from transformers import pipeline

from utils.data.encoding import encode_answer_sets, encode_pairs
from utils.data.formatting import format_text
from utils.data.sources import BENCHMARK_FIELDS
from utils.data.splits import DataSpec, load_eval_rows
from utils.data.synthetic import generate_pairs
from utils.evaluation.benchmark import figures, verdict
from utils.evaluation.model_comparison import compare, mcnemar_p
from utils.evaluation.scoring import RewardScorer
from utils.models.export import export_model
from utils.models.loading import load_reward_model, load_tokenizer

RW_EVAL = ROOT / "rw_eval.py"


def _export(base, out, seed, template):
    """A reward model with a random head, saved as step 2 exports one: its tokenizer appends the EOS for a plain
    template, and pads with a token of its own."""
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(str(base), "end", append_eos=template != "chat")
    export_model(load_reward_model(str(base), tokenizer, 0.0, False), tokenizer, out, zero_stage=0)
    return out


@pytest.fixture(scope="module")
def exports(opt_dir, llama_chat_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmark_models")
    return {"a": _export(opt_dir, root / "a", 1, "dschat"), "b": _export(opt_dir, root / "b", 2, "dschat"),
            "chat": _export(llama_chat_dir, root / "chat", 3, "chat")}


def _read(path, best_of_n=False, on_bad_row="error"):
    spec = DataSpec([str(path)], fields=BENCHMARK_FIELDS, on_bad_row=on_bad_row,
                    answer_lists=("chosen", "rejected") if best_of_n else ())
    return load_eval_rows(spec)


# A hand-made RewardBench file with unequal counts per subset, and the scores planted for each item, chosen first.
RB_ITEMS = [("alpacaeval-easy", [2.0, 1.0]), ("alpacaeval-easy", [0.5, 0.1]), ("alpacaeval-easy", [0.0, 1.0]),
            ("mt-bench-easy", [1.0, -1.0]),
            ("mt-bench-hard", [1.0, 0.0]), ("mt-bench-hard", [1.0, 1.0 + 5e-7]),  # a tie: wrong
            ("llmbar-natural", [0.0, 3.0]),
            ("donotanswer", [1.0, 0.0]), ("donotanswer", [2.0, 1.0]),
            ("math-prm", [1.0, 0.0]), ("math-prm", [0.0, 0.5]),
            ("hep-python", [3.0, 2.0]),
            ("my-own-set", [1.0, 0.0])]


def test_rewardbench_sections_by_hand(tmp_path):
    """RewardBench's weights, not the file's counts (planted: weigh by the items in the file, and Chat is 0.75);
    math-prm at 984, as the six hep-* subsets together (planted: its 447 examples, and Reasoning is 0.634)."""
    rows = [{"prompt": f"Question {i}?", "chosen": f"Answer {i}.", "rejected": f"No {i}.", "subset": subset, "id": i}
            for i, (subset, _) in enumerate(RB_ITEMS)]
    del rows[-1]["id"]  # named by where it was read
    rows.append({"prompt": "Same?", "chosen": "Yes.", "rejected": "Yes.", "subset": "donotanswer", "id": 99})
    path = write_jsonl(tmp_path / "rb.jsonl", rows)
    read, report = _read(path)
    assert report.identical_pairs_skipped == 1 and [r["subset"] for r in read] == [s for s, _ in RB_ITEMS]
    result = figures("rewardbench", [r["subset"] for r in read], [r["id"] for r in read], [s for _, s in RB_ITEMS])

    chat = (2 / 3 * 100 + 1 * 28) / (100 + 28)
    chat_hard = (1 / 2 * 37 + 0 * 100) / (37 + 100)
    safety = 1.0
    reasoning = (1 / 2 * 984 + 1 * 164) / (984 + 164)
    assert result["sections"] == pytest.approx({"Chat": chat, "Chat Hard": chat_hard, "Safety": safety,
                                                "Reasoning": reasoning}, abs=1e-12)
    assert result["overall"] == pytest.approx((chat + chat_hard + safety + reasoning) / 4, abs=1e-12)
    assert result["unknown_subsets"] == ["my-own-set"] and result["subsets"]["my-own-set"]["accuracy"] == 1.0
    assert result["ties"] == 1 and result["subsets"]["mt-bench-hard"]["ties"] == [5]
    assert result["subsets"]["alpacaeval-easy"] == {"items": 3, "right": 2, "ties": [], "accuracy": 2 / 3}
    assert read[len(RB_ITEMS) - 1]["id"] == f"{path}:{len(RB_ITEMS)}"

    partial = figures("rewardbench", ["hep-go"], [0], [[1.0, 0.0]])  # a section with no subset is absent, not 0
    assert partial["sections"]["Chat"] is None and partial["overall"] == partial["sections"]["Reasoning"] == 1.0


def test_ties_within_a_millionth_count_wrong():
    assert [verdict(s) for s in ([1.0, 1.0 - 9e-7], [1.0, 1.0 + 9e-7], [1.0, 1.0 - 2e-6], [1.0, 3.0, 1.0 - 5e-7],
                                 [1.0, 0.5, 1.0 - 5e-7])] == ["tie", "tie", "right", "wrong", "tie"]


def test_best_of_n_file_by_hand(tmp_path):
    """Right only when the chosen answer beats every rejected one (planted: beat the first, and Focus is 2/3);
    the mean over subsets counts each subset once (planted: over items, and it is 3/5)."""
    items = [("Focus", [3.0, 1.0, 2.0, 0.0]), ("Focus", [3.0, 1.0, 4.0, 0.0]), ("Focus", [1.0, 1.0 - 1e-7, 0.0]),
             ("Math", [2.0, 1.0, 1.0, 1.0]), ("Math", [0.0, -1.0])]
    rows = [{"prompt": f"Q{i}", "chosen": [f"A{i}"], "rejected": [f"R{i}.{j}" for j in range(len(s) - 1)],
             "subset": subset, "id": f"q{i}"} for i, (subset, s) in enumerate(items)]
    rows[-1] |= {"chosen": "A4", "rejected": ["R4.0"]}  # one answer as a string: a list of one
    bad = [{"prompt": "Q", "chosen": ["A"], "rejected": ["R", 3], "subset": "Math"},
           {"prompt": "Q", "chosen": ["A"], "rejected": [], "subset": "Math"},
           {"prompt": "Q", "chosen": ["A"], "subset": "Math"}]
    read, report = _read(write_jsonl(tmp_path / "bon.jsonl", rows + bad), best_of_n=True, on_bad_row="skip")
    assert report.bad_row_kinds == {"empty field": 1, "missing field": 1, "mistyped field": 1}
    assert len(read) == len(items)
    assert read[-1]["chosen"] == ["A4"] and read[0]["rejected"] == ["R0.0", "R0.1", "R0.2"]
    result = figures("best_of_n", [r["subset"] for r in read], [r["id"] for r in read], [s for _, s in items])
    assert result["subsets"]["Focus"] == {"items": 3, "right": 1, "ties": ["q2"], "accuracy": 1 / 3}
    assert result["subsets"]["Math"]["accuracy"] == 1.0
    assert result["mean_over_subsets"] == pytest.approx((1 / 3 + 1.0) / 2, abs=1e-12) and result["ties"] == 1


def test_mcnemar_against_hand_computation():
    """Exact binomial tails: 1 against 5 disagreements: 2 * (C(6,0) + C(6,1)) / 2^6 = 14/64."""
    assert mcnemar_p(1, 5) == mcnemar_p(5, 1) == pytest.approx(14 / 64, abs=1e-15)
    assert mcnemar_p(2, 8) == pytest.approx(2 * (1 + 10 + 45) / 1024, abs=1e-15)
    assert mcnemar_p(0, 6) == pytest.approx(2 / 64, abs=1e-15)
    assert mcnemar_p(0, 0) == mcnemar_p(3, 3) == 1.0
    assert mcnemar_p(900, 1100) == pytest.approx(8.457e-06, rel=1e-3)  # thousands of items: no overflow
    result = compare(["x", "x", "x", "y", "y"], [True, True, False, True, False], [False, True, True, False, False],
                     ["i0", "i1", "i2", "i3", "i4"])
    x, y, overall = result["subsets"]["x"], result["subsets"]["y"], result["overall"]
    assert (x["only_a"], x["only_b"], x["ahead"], x["p_value"]) == (["i0"], ["i2"], "even", 1.0)
    assert (y["only_a"], y["only_b"], y["ahead"], y["accuracy_a"], y["accuracy_b"]) == (["i3"], [], "a", 0.5, 0.0)
    assert overall["only_a"] == ["i0", "i3"] and overall["p_value"] == 1.0  # 2 * (1 + 3) / 8, capped at 1


def _pipeline(model_dir, texts):
    scorer = pipeline("text-classification", model=str(model_dir), function_to_apply="none", device="cpu")
    return [out["score"] for out in scorer(texts, batch_size=1)]


def _bon_rows(n):
    pairs = generate_pairs(n, seed=11)
    return [{"prompt": p["prompt"], "chosen": [p["chosen"]], "rejected": [p["rejected"], "No."][:1 + i % 2]
             + ["I would rather not answer that question today."] * (i % 3 == 0), "subset": "s", "id": i}
            for i, p in enumerate(pairs)]


@pytest.mark.parametrize("model, template", [("a", "dschat"), ("chat", "chat")])
def test_every_scoring_path_equals_pipeline(exports, model, template):
    """Shared rows of 2 to 4 answers and answers on their own, batched by length, both score each text as
    pipeline() does, on an OPT model with the dschat template and a Llama model with a chat template."""
    rows = _bon_rows(12)
    scorer = RewardScorer(str(exports[model]))
    sets, cut = encode_answer_sets(rows, scorer.tokenizer, template, 512, "truncate")
    texts = [format_text(r["prompt"], a, template, scorer.tokenizer) for r in rows for a in r["chosen"] + r["rejected"]]
    expected = _pipeline(exports[model], texts)
    for shared, layout in ((True, "one row per item, its prompt computed once"),
                           (False, "each answer a sequence of its own")):
        scores, used = scorer.score_answer_sets(sets, batch_size=5, shared=shared)
        assert used == layout and not any(cut)
        assert [s for item in scores for s in item] == pytest.approx(expected, abs=1e-5)


def test_items_are_cut_as_step_2_cuts_and_named(exports, tmp_path):
    """A pair is cut to the very ids step 2 trains on, or dropped where step 2 drops it; a best-of-N item loses
    the same prompt tokens from every answer; each cut or dropped item is named."""
    tokenizer = RewardScorer(str(exports["a"])).tokenizer
    long_prompt = "Tell me, " + "please, " * 30 + "what is 3 plus 4?"
    pairs = [{"prompt": long_prompt, "chosen": "7.", "rejected": "9."},
             {"prompt": "What is 3 plus 4?", "chosen": "It is 7. " * 30, "rejected": "9."},
             {"prompt": "What is 3 plus 4?", "chosen": "7.", "rejected": "9."}]
    for overlength in ("truncate", "drop"):
        step2, _ = encode_pairs(pairs, tokenizer, "dschat", 40, overlength)
        ours, cut = encode_answer_sets(pairs, tokenizer, "dschat", 40, overlength)
        assert [[p["chosen"], p["rejected"]] for p in step2] == [s for s in ours if s is not None]
        assert cut == [overlength == "truncate", False, False] and ours[1] is None
    item = [{"prompt": long_prompt, "chosen": ["7."], "rejected": ["9.", "It is 9."]}]
    (whole,), _ = encode_answer_sets(item, tokenizer, "dschat", 4096, "truncate")
    (best,), _ = encode_answer_sets(item, tokenizer, "dschat", 40, "truncate")
    excess = max(map(len, whole)) - 40  # from every answer's text, just after the BOS
    assert best == [ids[:1] + ids[1 + excess:] for ids in whole] and max(map(len, best)) == 40

    rows = [{**p, "subset": "math-prm", "id": f"p{i}"} for i, p in enumerate(pairs)]
    out = run_here(RW_EVAL, ["--model_name_or_path", exports["a"], "--data_path", write_jsonl(tmp_path / "rb.jsonl",
                   rows), "--benchmark", "rewardbench", "--max_seq_len", 40, "--plot", tmp_path / "p.png",
                   "--output", tmp_path / "out.json"]).stdout
    section = json.loads((tmp_path / "out.json").read_text())["benchmark"]
    assert section["left_out"]["over_max_seq_len"] == ["p1"] and section["models"][0]["cut"] == ["p0"]
    assert "left out 1 items whose answers alone exceed --max_seq_len 40 (or --overlength drop): p1" in out
    assert "1 items had their prompt cut from the left to fit --max_seq_len 40: p0" in out


def _right(model_dir, rows, template="dschat"):
    texts = [[format_text(r["prompt"], a, template) for a in (r["chosen"], r["rejected"])] for r in rows]
    scores = _pipeline(model_dir, [t for pair in texts for t in pair])
    return [scores[2 * i] - scores[2 * i + 1] > 1e-6 for i in range(len(rows))]


def test_two_exports_side_by_side(exports, tmp_path):
    """Both models on the same items: each one's accuracies as pipeline() scores decide them, the items only one
    gets right by name, McNemar's p on them; the speed against a pipeline() loop; the plot."""
    subsets = ["alpacaeval-easy", "mt-bench-hard", "donotanswer", "hep-go", "someone-else's"]
    rows = [{**{k: p[k] for k in ("prompt", "chosen", "rejected")}, "subset": subsets[i % 5], "id": f"r{i}"}
            for i, p in enumerate(generate_pairs(20, seed=5))]
    path = write_jsonl(tmp_path / "rb.jsonl", rows)
    out = run_here(RW_EVAL, ["--model_name_or_path", exports["a"], "--data_path", path, "--benchmark", "rewardbench",
                             "--compare_with", exports["b"], "--time_pipeline", "--output", tmp_path / "out.json",
                             "--plot", tmp_path / "acc.png"]).stdout
    section = json.loads((tmp_path / "out.json").read_text())["benchmark"]
    right_a, right_b = _right(exports["a"], rows), _right(exports["b"], rows)
    overall = section["comparison"]["overall"]
    assert overall["only_a"] == [r["id"] for r, a, b in zip(rows, right_a, right_b) if a and not b]
    assert overall["only_b"] == [r["id"] for r, a, b in zip(rows, right_a, right_b) if b and not a]
    assert overall["only_a"] or overall["only_b"]  # two different heads: the comparison has something to test
    assert overall["p_value"] == mcnemar_p(len(overall["only_a"]), len(overall["only_b"]))
    for model, right in zip(section["models"], (right_a, right_b)):
        hep = [ok for r, ok in zip(rows, right) if r["subset"] == "hep-go"]
        assert model["subsets"]["hep-go"]["accuracy"] == sum(hep) / len(hep)
        assert model["sections"]["Reasoning"] == model["subsets"]["hep-go"]["accuracy"]
        assert model["unknown_subsets"] == ["someone-else's"]
    assert section["speed"]["largest_difference"] < 1e-5 and section["speed"]["items"] == 20
    assert section["speed"]["ratio"] == pytest.approx(section["speed"]["items_per_second"]
                                                      / section["speed"]["pipeline_items_per_second"])
    assert f"A = {exports['a']} (--template dschat)" in out and "McNemar p < 0.05 in:" in out
    assert "1 subset(s) not in RewardBench's sections" in out and "overall (mean of 4 sections)" in out
    png = (tmp_path / "acc.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_best_of_n_run_on_a_chat_model(exports, tmp_path):
    """RewardBench 2's layout on a chat-template model: one row per item, the Ties item left out and named, the
    accuracy as pipeline() scores decide it."""
    rows = _bon_rows(6) + [{"prompt": "Pick one.", "chosen": ["A.", "B."], "rejected": ["C."], "subset": "Ties",
                            "id": "tie-1"}]
    out = run_here(RW_EVAL, ["--model_name_or_path", exports["chat"], "--template", "chat", "--data_path",
                             write_jsonl(tmp_path / "bon.jsonl", rows), "--benchmark", "best_of_n", "--check_pipeline",
                             "--output", tmp_path / "out.json", "--plot", tmp_path / "acc.png"]).stdout
    section = json.loads((tmp_path / "out.json").read_text())["benchmark"]
    assert section["left_out"]["several_chosen"] == ["tie-1"] and section["items"] == 6
    assert section["models"][0]["layout"] == "one row per item, its prompt computed once"
    scorer = RewardScorer(str(exports["chat"]))
    right = 0
    for r in rows[:6]:
        scores = _pipeline(exports["chat"], [format_text(r["prompt"], a, "chat", scorer.tokenizer)
                                             for a in r["chosen"] + r["rejected"]])
        right += scores[0] - max(scores[1:]) > 1e-6
    assert section["models"][0]["subsets"]["s"]["accuracy"] == right / 6
    assert section["models"][0]["mean_over_subsets"] == right / 6
    texts = sum(1 + len(r["rejected"]) for r in rows[:6])
    assert f"pipeline() parity: {texts} texts of 6 items" in out and "left out 1 items with several chosen" in out


@pytest.mark.parametrize("args, message", [
    (["--compare_with", "m2"], "--compare_with go with --benchmark rewardbench or best_of_n"),
    (["--benchmark", "best_of_n"], "--benchmark best_of_n scores the items of --data_path"),
    (["--benchmark", "rewardbench", "--data_path", "x.jsonl", "--time_pipeline", "--dtype", "bf16"],
     "--time_pipeline compares with pipeline() in fp32"),
    (["--serve", "--benchmark", "rewardbench"], "--serve scores the texts its clients send: drop --benchmark"),
])
def test_benchmark_flag_mistakes(args, message, monkeypatch, capsys):
    code, _, stderr = main_exits(RW_EVAL, ["--model_name_or_path", "m", *args], monkeypatch, capsys)
    assert code == 2 and message in stderr, stderr
