"""Exports mean the same to transformers 4.x and 5.x: under RewardBench's transformers 4.51.0, pipeline() scores a
reward model as the trainer's final evaluation did, for OPT-like, SentencePiece Llama and on-the-fly BPE tokenizers
in both score modes, and a step-1 export generates as it does under 5.x."""
import json
import shutil

import pytest
import sentencepiece as spm
import torch
from transformers import AutoTokenizer

from conftest import run_step1, run_step2, score_like_users
from utils.data.formatting import format_text
from utils.data.sources import read_source
from utils.models.tiny import build_tiny_model, synthetic_corpus
from utils.objectives.metrics import pair_metrics

BASES = ("opt", "llama_bpe", "llama_spm")
MODES = ("end", "first_pad")
PROMPTS = [" Human: What is the capital of France? Assistant:", " Human: What is 3 plus 4? Assistant:"]


@pytest.fixture(scope="module")
def spm_llama_dir(tmp_path_factory) -> str:
    """A Llama base whose fast tokenizer transformers converted from a SentencePiece model, as Llama 2's was."""
    work = tmp_path_factory.mktemp("spm")
    spm.SentencePieceTrainer.train(sentence_iterator=iter(synthetic_corpus(500)), model_prefix=str(work / "sp"),
                                   vocab_size=500, model_type="bpe", byte_fallback=True, unk_id=0, bos_id=1, eos_id=2,
                                   pad_id=-1, character_coverage=1.0, minloglevel=2)
    source = work / "source"
    source.mkdir()
    shutil.copy(work / "sp.model", source / "tokenizer.model")
    (source / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False, "legacy": False}))
    tokenizer = AutoTokenizer.from_pretrained(source)
    assert type(tokenizer).__name__ == "LlamaTokenizer" and tokenizer("Hi")["input_ids"][0] == tokenizer.bos_token_id
    return str(build_tiny_model(work / "base", "llama", hidden=32, layers=2, heads=2, tokenizer=tokenizer))


@pytest.fixture(scope="module")
def exports(opt_dir, llama_dir, spm_llama_dir, pair_files, tmp_path_factory) -> dict[tuple[str, str], object]:
    """A short step-2 run from each base in each score mode."""
    train, evals = pair_files
    bases = {"opt": opt_dir, "llama_bpe": llama_dir, "llama_spm": spm_llama_dir}
    out = {}
    for base in BASES:
        for mode in MODES:
            folder = tmp_path_factory.mktemp(f"{base}-{mode}")
            run_step2(["--model_name_or_path", bases[base], "--data_path", train, "--eval_data_path", evals,
                       "--data_split", "0,1,0", "--score_token", mode, "--per_device_train_batch_size", 16,
                       "--per_device_eval_batch_size", 16, "--max_seq_len", 96, "--learning_rate", 3e-3,
                       "--dropout", 0.0, "--dtype", "fp32", "--eval_iters", 1000, "--output_dir", folder])
            out[base, mode] = folder
    return out


def test_reward_exports_score_as_trained_under_4x_and_5x(exports, pair_files, transformers4, tmp_path):
    rows = read_source(str(pair_files[1]))[0]["train"]
    jobs = []
    for folder in exports.values():
        tokenizer = AutoTokenizer.from_pretrained(folder)
        jobs.append({"model_dir": str(folder), "texts": [format_text(r["prompt"], r[k], "dschat", tokenizer)
                                                         for k in ("chosen", "rejected") for r in rows]})
    v4 = score_like_users(jobs, tmp_path, transformers4)
    v5 = score_like_users(jobs, tmp_path)
    assert v4[0]["version"] == "4.51.0" and v5[0]["version"].startswith("5.")
    for (base, mode), folder, old, new in zip(exports, exports.values(), v4, v5):
        final = json.loads((folder / "eval_results.json").read_text())
        assert old["ids"] == new["ids"], f"{base} {mode}: 4.x tokenizes differently"
        for version, result in (("4.x", old), ("5.x", new)):
            for idiom in ("pipeline", "lmflow_card", "model"):
                chosen, rejected = torch.tensor(result[idiom], dtype=torch.float64).chunk(2)
                again = pair_metrics(chosen, rejected)
                for key in ("accuracy", "chosen_mean", "rejected_mean", "loss"):
                    assert again[key] == pytest.approx(final[key], abs=1e-4), f"{base} {mode} {version} {idiom} {key}"
        assert max(abs(a - b) for a, b in zip(old["pipeline"], new["pipeline"])) <= 1e-4, f"{base} {mode}"


def test_a_step1_export_generates_alike_under_4x_and_5x(spm_llama_dir, pair_files, transformers4, tmp_path):
    out = tmp_path / "sft"
    run_step1(["--model_name_or_path", spm_llama_dir, "--data_path", pair_files[0], "--data_split", "1,0,0",
               "--per_device_train_batch_size", 16, "--max_seq_len", 96, "--learning_rate", 3e-3, "--dropout", 0.0,
               "--dtype", "fp32", "--output_dir", out])
    (v4,), (v5,) = (score_like_users([{"model_dir": str(out), "prompts": PROMPTS}], tmp_path, version)
                    for version in (transformers4, None))
    assert v4["ids"] == v5["ids"] and v4["ids"][0][0] == AutoTokenizer.from_pretrained(out).bos_token_id
    assert v4["generated_ids"] == v5["generated_ids"]
    assert v4["generated"] == v5["generated"] and all(v5["generated"])
    assert torch.allclose(torch.tensor(v4["last_logits"]), torch.tensor(v5["last_logits"]), atol=1e-4)
