"""Every source adapter on fixture files written in that source's schema, split strings, blending and bad rows."""
import csv
import gzip
import json

import pytest

from utils.data.splits import DataSpec, load_rows
from utils.errors import UserError
from utils.data.sources import FIELDS, PROMPT_FIELDS, SFT_FIELDS, RowChecker, read_source

HH_PROMPT = "\n\nHuman: Hi, can you help?\n\nAssistant: Sure.\n\nHuman: What is 2 plus 2?\n\nAssistant:"


def _jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _dataset(tmp_path, name, splits):
    """A local folder laid out as the hub dataset `name` (owner/name), one jsonl file per split."""
    for split, records in splits.items():
        _jsonl(tmp_path / name / f"{split}.jsonl", records)
    return str(tmp_path / name)


def test_dahoas_rm_static_and_full_hh_rlhf(tmp_path):
    record = {"prompt": HH_PROMPT, "response": " 4.", "chosen": " 4.", "rejected": " 5."}
    for name in ("Dahoas/rm-static", "Dahoas/full-hh-rlhf"):
        splits, _ = read_source(_dataset(tmp_path, name, {"train": [record] * 2, "test": [record]}))
        assert splits == {"train": [{"prompt": HH_PROMPT, "chosen": " 4.", "rejected": " 5."}] * 2,
                          "test": [{"prompt": HH_PROMPT, "chosen": " 4.", "rejected": " 5."}]}


def test_synthetic_instruct_gptj_has_no_test_split_so_eval_is_held_out(tmp_path):
    records = [{"prompt": f"Write a poem number {i}.", "chosen": "Roses.", "rejected": "No."} for i in range(20)]
    path = _dataset(tmp_path, "Dahoas/synthetic-instruct-gptj-pairwise", {"train": records})
    train, evals, report = load_rows(DataSpec([path], data_split="0,1,0", eval_fraction=0.25))
    assert len(train) == 15 and len(evals) == 5 and report.rows_read[path] == {"train": 20}
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in evals}


def test_yitingxie_rlhf_reward_datasets(tmp_path):
    record = {"prompt": "\n\nHuman: What is 2 plus 2?\n\n", "chosen": "Assistant: 4.", "rejected": "Assistant: 5."}
    splits, _ = read_source(_dataset(tmp_path, "yitingxie/rlhf-reward-datasets", {"train": [record]}))
    assert splits["train"] == [{"prompt": "\n\nHuman: What is 2 plus 2?\n\nAssistant:", "chosen": " 4.",
                                "rejected": " 5."}]


def test_openai_webgpt_comparisons_picks_the_better_answer_and_skips_ties(tmp_path):
    question = {"full_text": "Why is the sky blue?"}
    records = [{"question": question, "answer_0": "Rayleigh scattering [1].", "answer_1": "Paint.",
                "score_0": 1.0, "score_1": -1.0},
               {"question": question, "answer_0": "Paint.", "answer_1": "Scattering (2).",
                "score_0": -0.5, "score_1": 0.5},
               {"question": question, "answer_0": "A.", "answer_1": "B.", "score_0": 0.0, "score_1": 0.0}]
    splits, ties = read_source(_dataset(tmp_path, "openai/webgpt_comparisons", {"train": records}))
    assert ties == 1
    assert splits["train"] == [{"prompt": "Why is the sky blue?", "chosen": "Rayleigh scattering.", "rejected": "Paint."},
                               {"prompt": "Why is the sky blue?", "chosen": "Scattering.", "rejected": "Paint."}]


def test_stanfordnlp_shp_follows_labels(tmp_path):
    records = [{"history": "Best pet?", "human_ref_A": "A cat.", "human_ref_B": "A rock.", "labels": 1},
               {"history": "Best pet?", "human_ref_A": "A rock.", "human_ref_B": "A dog.", "labels": 0}]
    splits, _ = read_source(_dataset(tmp_path, "stanfordnlp/SHP", {"train": records, "validation": records[:1]}))
    assert splits["train"] == [{"prompt": "Best pet?", "chosen": "A cat.", "rejected": "A rock."},
                               {"prompt": "Best pet?", "chosen": "A dog.", "rejected": "A rock."}]
    assert list(splits) == ["train", "validation"]
    with pytest.raises(UserError, match=r"stanfordnlp/SHP \[train\] row 0: not in the schema of"):
        read_source(_dataset(tmp_path / "bad", "stanfordnlp/SHP", {"train": [{"history": "x"}]}))


def test_anthropic_transcripts_split_at_the_last_assistant_turn(tmp_path):
    record = {"chosen": HH_PROMPT + " It is 4.", "rejected": HH_PROMPT + " It is 5."}
    splits, _ = read_source(_dataset(tmp_path, "Anthropic/hh-rlhf", {"train": [record]}))
    assert splits["train"] == [{"prompt": HH_PROMPT, "chosen": " It is 4.", "rejected": " It is 5."}]
    sft, _ = read_source(str(_jsonl(tmp_path / "sft.jsonl", [{"chosen": record["chosen"]}])), SFT_FIELDS)
    assert sft["train"] == [{"prompt": HH_PROMPT, "chosen": " It is 4."}]


def test_transcripts_with_different_prompts_are_bad_rows(tmp_path):
    bad = {"chosen": HH_PROMPT + " 4.", "rejected": "\n\nHuman: Other?\n\nAssistant: 5."}
    path = str(_jsonl(tmp_path / "hh.jsonl", [{"chosen": HH_PROMPT + " 4.", "rejected": HH_PROMPT + " 5."}, bad]))
    with pytest.raises(UserError, match=r"hh.jsonl:2: chosen and rejected transcripts differ"):
        read_source(path)
    checker = RowChecker("skip")
    splits, _ = read_source(path, checker=checker)
    assert len(splits["train"]) == 1 and checker.skipped == 1


def test_chat_message_lists(tmp_path):
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    record = {"chosen": prompt + [{"role": "assistant", "content": "4"}],
              "rejected": prompt + [{"role": "assistant", "content": "5"}]}
    splits, _ = read_source(str(_jsonl(tmp_path / "chat.jsonl", [record])))
    assert splits["train"] == [{"prompt": prompt, "chosen": "4", "rejected": "5"}]
    with_prompt_column = record | {"prompt": "2+2?"}  # UltraFeedback's layout: the conversations carry the prompt
    assert read_source(str(_jsonl(tmp_path / "uf.jsonl", [with_prompt_column])))[0] == splits
    other = record | {"rejected": [{"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "6"}]}
    with pytest.raises(UserError, match="conversations differ before their last message"):
        read_source(str(_jsonl(tmp_path / "chat2.jsonl", [other])))


def test_csv_parquet_and_gzip_with_column_mapping(tmp_path):
    rows = [{"question": "2+2?", "good": "4", "bad": "5"}, {"question": "3+3?", "good": "6", "bad": "7"}]
    expected = [{"prompt": "2+2?", "chosen": "4", "rejected": "5"}, {"prompt": "3+3?", "chosen": "6", "rejected": "7"}]
    checker = RowChecker(columns={"prompt": "question", "chosen": "good", "rejected": "bad"})
    with open(tmp_path / "p.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["question", "good", "bad"])
        writer.writeheader()
        writer.writerows(rows)
    with gzip.open(tmp_path / "p.csv.gz", "wb") as handle:
        handle.write((tmp_path / "p.csv").read_bytes())
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    with gzip.open(tmp_path / "p.jsonl.gz", "wt") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in rows))
    for name in ("p.csv", "p.csv.gz", "p.parquet", "p.jsonl.gz"):
        assert read_source(str(tmp_path / name), checker=checker)[0] == {"train": expected}, name
    with pytest.raises(UserError, match=r"p.csv:2: field 'prompt' is missing"):
        read_source(str(tmp_path / "p.csv"))


def test_csv_bad_rows_are_named_by_line(tmp_path):
    (tmp_path / "b.csv").write_text('prompt,chosen,rejected\n"2+2?",4,5\n"3+3?",,7\n')
    with pytest.raises(UserError, match=r"b.csv:3: field 'chosen' is empty"):
        read_source(str(tmp_path / "b.csv"))


@pytest.mark.parametrize("line, message", [
    (b'{"prompt": "p", "chosen": ', "invalid JSON"),
    (b'{"prompt": "p", "chosen": 3, "rejected": "r"}', "field 'chosen' must be a string, got int"),
    (b'{"prompt": "p", "chosen": " ", "rejected": "r"}', "field 'chosen' is empty"),
    (b'{"prompt": "caf\xe9", "chosen": "c", "rejected": "r"}', "not valid UTF-8"),
    (b'{"chosen": "\\n\\nHuman: a\\n\\nAssistant: b", "rejected": "\\n\\nHuman: z\\n\\nAssistant: b"}',
     "chosen and rejected transcripts differ"),
])
def test_bad_row_matrix_errors_or_counted_skips(tmp_path, line, message):
    good = json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}).encode()
    path = tmp_path / "rows.jsonl"
    path.write_bytes(good + b"\n" + line + b"\n" + good + b"\n")
    with pytest.raises(UserError, match=f"rows.jsonl:2: {message}"):
        load_rows(DataSpec([str(path)], [str(path)]))
    train, _, report = load_rows(DataSpec([str(path)], [str(path)], data_split="0,1,0", on_bad_row="skip"))
    assert len(train) == 2 and report.bad_rows_skipped == 2  # once as a train source, once as the eval source
    assert any("skipped 2 bad rows" in line for line in report.lines())


def test_split_strings_select_exact_rows_and_refuse_overlap(tmp_path):
    train = [{"prompt": f"train {i}", "chosen": "a", "rejected": "b"} for i in range(10)]
    test = [{"prompt": f"test {i}", "chosen": "a", "rejected": "b"} for i in range(10)]
    path = _dataset(tmp_path, "me/pairs", {"train": train, "test": test})
    rows, evals, _ = load_rows(DataSpec([path], data_split="0,1,0", train_split="train+test[:6]",
                                        eval_split="test[6:]"))
    assert sorted(r["prompt"] for r in rows) == sorted([f"train {i}" for i in range(10)] +
                                                       [f"test {i}" for i in range(6)])
    assert sorted(r["prompt"] for r in evals) == [f"test {i}" for i in range(6, 10)]
    with pytest.raises(UserError, match="share 2 rows; eval rows must not be trained on"):
        load_rows(DataSpec([path], train_split="train+test[:6]", eval_split="test[4:]"))
    with pytest.raises(UserError, match=r"split 'validation': Unknown split"):
        load_rows(DataSpec([path], eval_split="validation"))
    # train+test with no eval split given: the test split is trained on, so eval is held out of the train rows
    rows, evals, _ = load_rows(DataSpec([path], data_split="0,1,0", train_split="train+test", eval_fraction=0.1))
    assert len(rows) == 18 and len(evals) == 2


def test_several_sources_blend_with_a_seeded_shuffle(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", [{"prompt": f"a{i}", "chosen": "x", "rejected": "y"} for i in range(30)])
    b = _jsonl(tmp_path / "b.jsonl", [{"prompt": f"b{i}", "chosen": "x", "rejected": "y"} for i in range(30)])
    spec = DataSpec([str(a), str(b)], data_split="0,1,0", seed=5)
    train, evals, report = load_rows(spec)
    assert len(train) == 54 and len(evals) == 6 and set(report.rows_read) == {str(a), str(b)}
    first_half = {r["prompt"][0] for r in train[:27]}
    assert first_half == {"a", "b"}  # interleaved, not a then b
    assert load_rows(spec)[0] == train and load_rows(DataSpec([str(a), str(b)], data_split="0,1,0", seed=6))[0] != train


def test_synthetic_flawed_is_step_1_data_with_a_held_out_split():
    splits, skipped = read_source("synthetic_flawed:300", SFT_FIELDS)
    train, test = splits["train"], splits["test"]
    assert skipped == 0 and len(train) == 300 and test and len(test) <= 30
    assert all(set(row) == set(SFT_FIELDS) for row in train + test)
    assert not {tuple(r.values()) for r in train} & {tuple(r.values()) for r in test}
    assert read_source("synthetic_flawed:300", SFT_FIELDS)[0] == splits
    assert len(read_source("synthetic_flawed", SFT_FIELDS)[0]["train"]) == 4000
    with pytest.raises(UserError, match="synthetic_flawed has no rejected answers; it is for step 1"):
        read_source("synthetic_flawed:300", FIELDS)
    with pytest.raises(UserError, match="expected synthetic_flawed:N with N a number"):
        read_source("synthetic_flawed:many", SFT_FIELDS)


def _prompt_rows(*sources, **spec):
    """Step 3's read: train and eval prompt rows (all of them: --data_split 0,0,1) and the report."""
    return load_rows(DataSpec(list(sources), data_split="0,0,1", phase=2, fields=PROMPT_FIELDS, **spec))


def test_prompt_rows_keep_every_other_column_and_pairs_do_not(tmp_path):
    messages = [{"role": "user", "content": "3+3?"}]
    records = [{"prompt": "2+2?", "answer": "4", "id": 1, "meta": {"level": [1, 2]}, "chosen": "4", "rejected": "5"},
               {"prompt": messages, "answer": "6", "id": 2, "chosen": "6", "rejected": "7"}]
    path = str(_jsonl(tmp_path / "p.jsonl", records))
    splits, _ = read_source(path, PROMPT_FIELDS)
    # chosen and rejected are a pair's answers, not columns a reward function checks (nor would _drop_identical
    # keep a prompt row whose two happen to match)
    assert splits["train"] == [{"prompt": "2+2?", "answer": "4", "id": 1, "meta": {"level": [1, 2]}},
                               {"prompt": messages, "answer": "6", "id": 2}]
    assert read_source(path)[0]["train"][0] == {"prompt": "2+2?", "chosen": "4", "rejected": "5"}  # pairs unchanged
    renamed = str(_jsonl(tmp_path / "q.jsonl", [{"question": "2+2?", "prompt": "ignored", "answer": "4"}]))
    checker = RowChecker(columns={"prompt": "question"})
    assert read_source(renamed, PROMPT_FIELDS, checker)[0]["train"] == [{"prompt": "2+2?", "answer": "4"}]


def test_prompt_rows_from_csv_keep_columns_and_refuse_values_beyond_the_header(tmp_path):
    (tmp_path / "p.csv").write_text("prompt,answer,id\n2+2?,4,a\n3+3?,6\n")
    splits, _ = read_source(str(tmp_path / "p.csv"), PROMPT_FIELDS)
    assert splits["train"] == [{"prompt": "2+2?", "answer": "4", "id": "a"},
                               {"prompt": "3+3?", "answer": "6", "id": None}]  # a short line: None, as missing
    (tmp_path / "q.csv").write_text("prompt,answer\n2+2?,4\n3+3?,6,oops\n")
    with pytest.raises(UserError, match=r"q.csv:3: 1 more values than the header has columns"):
        read_source(str(tmp_path / "q.csv"), PROMPT_FIELDS)
    assert read_source(str(tmp_path / "q.csv"), PROMPT_FIELDS, RowChecker("skip"))[0]["train"] == [
        {"prompt": "2+2?", "answer": "4"}]


def test_parquet_values_become_json_and_a_column_without_a_json_form_is_left_out_and_reported(tmp_path):
    import datetime
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    when = datetime.datetime(2024, 5, 1, 12, 30)
    pq.write_table(pa.Table.from_pylist([
        {"prompt": "2+2?", "answer": 4, "price": decimal.Decimal("1.50"), "when": when, "blob": b"\x00"},
        {"prompt": "3+3?", "answer": 6, "price": None, "when": when, "blob": b"\x01"}]), tmp_path / "p.parquet")
    train, evals, report = _prompt_rows(str(tmp_path / "p.parquet"), eval_fraction=0.5)
    rows = sorted(train + evals, key=lambda r: r["prompt"])
    assert rows == [{"prompt": "2+2?", "answer": 4, "price": "1.50", "when": "2024-05-01T12:30:00"},
                    {"prompt": "3+3?", "answer": 6, "price": None, "when": "2024-05-01T12:30:00"}]
    json.dumps(rows)  # what samples.jsonl and a reward server need
    assert report.extra_columns == {str(tmp_path / "p.parquet"): {"answer": 0, "price": 1, "when": 0}}
    assert f"{tmp_path / 'p.parquet'}: column(s) blob (bytes) left out of its prompt rows" in " ".join(report.lines())


def _fake_hub(monkeypatch, splits):
    """datasets.load_dataset answering with `splits` (DatasetDicts built here), recording what it was asked."""
    import datasets

    calls = []

    def load_dataset(name, config=None):
        calls.append((name, config))
        return datasets.DatasetDict({split: datasets.Dataset.from_list(rows) for split, rows in splits.items()})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_a_dataset_s_prompt_rows_keep_their_columns_none_where_a_split_lacks_one(monkeypatch):
    calls = _fake_hub(monkeypatch, {"train": [{"prompt": "2+2?", "answer": "4", "label": 1}] * 2,
                                    "test": [{"prompt": "5+5?", "answer": "10"}]})
    train, evals, report = _prompt_rows("me/maths")
    assert calls == [("me/maths", None)]
    assert train == [{"prompt": "2+2?", "answer": "4", "label": 1}] * 2
    assert evals == [{"prompt": "5+5?", "answer": "10", "label": None}]  # aligned: one list per column, every row
    assert report.lines()[0] == ("data: me/maths [train 2, test 1; columns: answer, label (None in 1 row)] -> "
                                 "train 2 (all), eval 1 (split test)")


GSM8K = [{"question": "Ann has 2 pens and buys 3. How many?", "answer": "She has 2 + 3 = <<2+3=5>>5 pens.\n#### 5"},
         {"question": "Bo has 4 cups and breaks 1. How many?", "answer": "He has 4 - 1 = <<4-1=3>>3.\n#### 3"}]


def test_gsm8k_file_gives_prompts_with_answers_and_step_1_rows_and_refuses_pairs(tmp_path):
    path = str(_jsonl(tmp_path / "gsm8k.jsonl", GSM8K))
    splits, _ = read_source(path, PROMPT_FIELDS)
    assert splits["train"] == [{"prompt": r["question"], "answer": r["answer"]} for r in GSM8K]  # answer as it comes
    assert read_source(path, SFT_FIELDS)[0]["train"][1] == {"prompt": GSM8K[1]["question"],
                                                            "chosen": GSM8K[1]["answer"]}
    with pytest.raises(UserError, match=r"gsm8k.jsonl:1: questions with worked answers \(GSM8K's layout: question, "
                                        r"answer\) have no rejected answers"):
        read_source(path)


def test_openai_gsm8k_from_the_hub_reads_config_main(monkeypatch):
    test = {"question": "What is 6 times 7?", "answer": "6 * 7 = <<6*7=42>>42\n#### 42"}
    calls = _fake_hub(monkeypatch, {"train": GSM8K, "test": [test]})
    with pytest.raises(UserError, match="openai/gsm8k: questions with worked answers .* have no rejected answers"):
        read_source("openai/gsm8k")
    assert calls == []  # refused before a download
    train, evals, report = _prompt_rows("openai/gsm8k")
    assert calls == [("openai/gsm8k", "main")]  # without it, load_dataset asks for a configuration
    assert {r["prompt"]: r["answer"] for r in train} == {r["question"]: r["answer"] for r in GSM8K}
    assert evals == [{"prompt": test["question"], "answer": test["answer"]}]
    assert "[train 2, test 1; columns: answer]" in report.lines()[0]
