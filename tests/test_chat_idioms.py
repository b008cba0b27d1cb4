"""A chat-template reward model gives the trainer's score through every idiom its users copy, under transformers 4.x
and 5.x: the text idiom (RLHFlow's card: the template's text, leading BOS text removed, through the pipeline), the ids
idiom (TRL and RewardBench: the template's ids, then the model), plain pipeline() and the bare model on our text, and
rw_eval.py's scorer. Three template styles: Llama-3-like (writes the BOS, ends turns with <|eot_id|>), Llama-2-like
([INST], ends turns with the EOS) and ChatML (<|im_end|> and a newline)."""
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from conftest import run_step2, score_like_users, write_jsonl
from utils.data.encoding import collate_pairs, encode_pairs
from utils.data.formatting import format_text
from utils.data.synthetic import generate_pairs
from utils.evaluation.scoring import RewardScorer
from utils.models.loading import load_tokenizer
from utils.models.reward_model import RewardModel
from utils.models.tiny import build_tiny_model, synthetic_corpus, train_bpe
from utils.objectives.metrics import pair_metrics
from utils.objectives.reward import RewardObjective

STYLES = {
    "llama3": dict(
        template="{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                 "{{ m['content'] }}<|eot_id|>{% endfor %}"
                 "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}",
        specials=["<unk>", "<s>", "</s>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        bos="<s>", eos="</s>", add_bos=True),
    "llama2": dict(
        template="{% for m in messages %}{% if m['role'] == 'user' %}{{ bos_token + '[INST] ' + m['content'] + "
                 "' [/INST]' }}{% else %}{{ ' ' + m['content'] + ' ' + eos_token }}{% endif %}{% endfor %}",
        specials=["<unk>", "<s>", "</s>"], bos="<s>", eos="</s>", add_bos=True),
    "chatml": dict(
        template="{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        specials=["<unk>", "<|im_start|>", "<|im_end|>"], bos=None, eos="<|im_end|>", add_bos=False),
}


def _transcripts(n: int, seed: int) -> list[dict]:
    """Two-turn HH transcripts whose answers keep the leading space HH gives them."""
    rows = generate_pairs(2 * n, seed=seed)
    return [{"prompt": f"\n\nHuman: {first['prompt']}\n\nAssistant: {first['chosen']}\n\nHuman: {row['prompt']}"
                       "\n\nAssistant:",
             "chosen": " " + row["chosen"], "rejected": " " + row["rejected"]}
            for first, row in zip(rows[::2], rows[1::2])]


def _messages(row: dict, answer: str) -> list[dict[str, str]]:
    """The conversation as a user writes it from the transcript: one message a turn, whitespace trimmed."""
    _, question, first_answer, second_question = row["prompt"].removesuffix("\n\nAssistant:").split("\n\n", 3)
    turns = [question.removeprefix("Human: "), first_answer.removeprefix("Assistant: "),
             second_question.removeprefix("Human: "), row[answer]]
    return [{"role": role, "content": text.strip()} for role, text in zip(["user", "assistant"] * 2, turns)]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path, list[dict]]:
    folder = tmp_path_factory.mktemp("hh")
    evals = _transcripts(12, seed=5)
    return write_jsonl(folder / "train.jsonl", _transcripts(48, seed=4)), write_jsonl(folder / "eval.jsonl", evals), evals


@pytest.fixture(scope="module")
def reward_models(data, tmp_path_factory) -> dict[str, Path]:
    """A short step-2 run with --template chat from a tiny Llama in each template style."""
    corpus = synthetic_corpus(400) + ["user assistant system [INST] [/INST]"]
    out = {}
    for name, style in STYLES.items():
        tokenizer = train_bpe(corpus, style["specials"], style["bos"], style["eos"], vocab_size=600,
                              add_bos=style["add_bos"])
        tokenizer.chat_template = style["template"]
        base = build_tiny_model(tmp_path_factory.mktemp(f"{name}-base"), "llama", hidden=32, layers=2, heads=2,
                                tokenizer=tokenizer)
        out[name] = tmp_path_factory.mktemp(f"{name}-rm")
        run_step2(["--model_name_or_path", base, "--data_path", data[0], "--eval_data_path", data[1], "--data_split",
                   "0,1,0", "--template", "chat", "--per_device_train_batch_size", 16, "--per_device_eval_batch_size",
                   16, "--max_seq_len", 256, "--learning_rate", 3e-3, "--dropout", 0.0, "--dtype", "fp32",
                   "--output_dir", out[name]])
    return out


def _trainer_scores(folder: Path, rows: list[dict]) -> tuple[torch.Tensor, list[list[int]]]:
    """Chosen then rejected scores, and the ids, as the trainer computes them on padded batches."""
    tokenizer = load_tokenizer(str(folder), "end", append_eos=False)
    pairs, _ = encode_pairs(rows, tokenizer, "chat", 256, "truncate")
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    objective = RewardObjective(score_token="end", pad_id=tokenizer.pad_token_id, num_padding_at_beginning=0)
    with torch.no_grad():
        scores = objective.scores(RewardModel(model), collate_pairs(pairs, tokenizer.pad_token_id))[2].double()
    return scores, [p[k] for k in ("chosen", "rejected") for p in pairs]


def test_every_idiom_gives_the_trainers_score_in_both_versions(reward_models, data, transformers4, tmp_path):
    rows = data[2]
    jobs, trainer = [], {}
    for name, folder in reward_models.items():
        scores, ids = trainer[name] = _trainer_scores(folder, rows)
        final = json.loads((folder / "eval_results.json").read_text())
        again = pair_metrics(*scores.chunk(2))
        for key in ("accuracy", "chosen_mean", "rejected_mean", "loss"):
            assert again[key] == pytest.approx(final[key], abs=1e-4), f"{name}: the trainer's own eval, {key}"
        scorer = RewardScorer(str(folder))  # rw_eval.py
        texts = [format_text(r["prompt"], r[k], "chat", scorer.tokenizer) for k in ("chosen", "rejected") for r in rows]
        assert torch.allclose(torch.tensor(scorer.score(texts, 8)[0], dtype=torch.float64), scores, atol=1e-4), name
        jobs.append({"model_dir": str(folder), "texts": texts,
                     "conversations": [_messages(r, k) for k in ("chosen", "rejected") for r in rows]})
    for version in (transformers4, None):
        for (name, (scores, ids)), result in zip(trainer.items(), score_like_users(jobs, tmp_path, version)):
            where = f"{name} under transformers {result['version']}"
            assert result["chat_ids"] == ids and result["ids"] == ids, f"{where}: the template's ids differ"
            for idiom in ("rlhflow_card", "chat_ids_model", "pipeline", "model"):
                worst = (torch.tensor(result[idiom], dtype=torch.float64) - scores).abs().max().item()
                assert worst <= 1e-4, f"{where}: {idiom} is {worst:.2e} off the trainer's score"


def test_each_style_is_read_at_the_templates_last_token(reward_models, data):
    """Where the score is read: the end-of-turn the template writes last (ChatML: the newline after it), with no
    EOS appended; the answer is written without the leading space the transcript gave it."""
    row = data[2][0]
    for name, folder in reward_models.items():
        tokenizer = load_tokenizer(str(folder), "end", append_eos=False)
        ids = tokenizer(format_text(row["prompt"], row["chosen"], "chat", tokenizer))["input_ids"]
        last = tokenizer.convert_ids_to_tokens(ids[-2:])
        expected = {"llama3": "<|eot_id|>", "llama2": "</s>", "chatml": "Ċ"}[name]
        assert last[-1] == expected, (name, last)
        assert format_text(row["prompt"], row["chosen"], "chat", tokenizer) == \
            format_text(row["prompt"], row["chosen"].strip(), "chat", tokenizer), name
