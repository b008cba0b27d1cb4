"""LoRA through PEFT, and exports that keep the score head under ZeRO-3: with or without LoRA, on 1 or 2
processes, the exported directory scores the eval pairs exactly as the engine did just before the export."""
from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, pipeline

from conftest import STEP2, main_exits, read_metrics, run_step1, run_step2
from test_train_sft import _perplexity
from utils.data.formatting import format_text
from utils.objectives.metrics import pair_metrics
from utils.data.sources import read_source

LORA = ["--lora_dim", 4, "--only_optimize_lora", "--lora_learning_rate", 1e-2, "--save_adapter"]


def _scores(model_dir, texts, **kwargs):
    rm = pipeline("text-classification", model=model_dir, function_to_apply="none", device="cpu", **kwargs)
    return torch.tensor([o["score"] for o in rm(texts, batch_size=8)], dtype=torch.float64)


@pytest.mark.parametrize("lora, nproc", [(False, 1), (False, 2), (True, 1), (True, 2)])
def test_zero3_export_scores_as_the_engine_did(opt_dir, pair_files, tmp_path, lora, nproc):
    out = tmp_path / "rm"
    run_step2(["--model_name_or_path", opt_dir, "--data_path", pair_files[0], "--eval_data_path", pair_files[1],
               "--per_device_train_batch_size", 8 // nproc, "--per_device_eval_batch_size", 16, "--max_seq_len", 96,
               "--learning_rate", 3e-3, "--dropout", 0.0, "--dtype", "fp32", "--zero_stage", 3,
               "--output_dir", out, *(LORA if lora else [])], nproc=nproc, launcher="torchrun")
    final = json.loads((out / "eval_results.json").read_text())
    rows = read_source(str(pair_files[1]))[0]["train"]
    texts = [format_text(r["prompt"], r[k], "dschat") for k in ("chosen", "rejected") for r in rows]
    exported = _scores(str(out), texts)
    again = pair_metrics(*exported.chunk(2))
    for key in ("accuracy", "chosen_mean", "rejected_mean", "loss"):
        assert again[key] == pytest.approx(final[key], abs=1e-4), key
    weights = load_file(out / "model.safetensors")
    assert "score.weight" in weights and not any("lora_" in k or "base_layer" in k for k in weights)
    if not lora:
        return
    assert "| LoRA (merged) | rank 4, alpha 4, on `layers.`, lr 0.01, adapters only |" in (out / "README.md").read_text()
    base = load_file(opt_dir / "model.safetensors")
    embeddings = "model.decoder.embed_tokens.weight"
    assert torch.equal(weights[embeddings], base[embeddings]), "--only_optimize_lora leaves the backbone as it was"
    q_proj = "model.decoder.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(weights[q_proj], base[q_proj]), "the trained adapters are merged in"
    # The adapter, with its score head, on the base model gives the merged model's scores.
    tokenizer = AutoTokenizer.from_pretrained(out)
    backbone = AutoModelForSequenceClassification.from_pretrained(opt_dir, num_labels=1,
                                                                  pad_token_id=tokenizer.pad_token_id)
    adapted = PeftModel.from_pretrained(backbone, out / "adapter").eval()
    assert torch.allclose(_scores(adapted, texts, tokenizer=tokenizer), exported, atol=1e-5)


def test_sft_with_lora_exports_a_merged_causal_lm(opt_dir, pair_files, tmp_path):
    """Adapters alone: the LM head, tied to the embeddings, stays frozen too."""
    train, evals = pair_files
    out = tmp_path / "sft"
    run_step1(["--model_name_or_path", opt_dir, "--data_path", train, "--eval_data_path", evals, "--data_split",
               "1,0,0", "--max_seq_len", 96, "--dropout", 0.0, "--dtype", "fp32", "--num_train_epochs", 2,
               "--lora_dim", 8, "--lora_module_name", "decoder.layers.", "--only_optimize_lora",
               "--lora_learning_rate", 1e-2, "--output_dir", out])
    evals_logged = [m for m in read_metrics(out) if m["split"] == "eval"]
    assert evals_logged[-1]["perplexity"] < 0.9 * evals_logged[0]["perplexity"], "the adapters alone learn"
    final = json.loads((out / "eval_results.json").read_text())
    assert _perplexity(out, evals, False)["perplexity"] == pytest.approx(final["perplexity"], rel=1e-4)
    weights = load_file(out / "model.safetensors")
    assert not any("lora_" in k for k in weights)
    embeddings = "model.decoder.embed_tokens.weight"
    assert torch.equal(weights[embeddings], load_file(opt_dir / "model.safetensors")[embeddings])
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "OPTForCausalLM" and not (out / "adapter").exists()


def test_lora_module_name_that_matches_nothing_is_refused(opt_dir, pair_files, tmp_path, monkeypatch, capsys):
    code, _, stderr = main_exits(STEP2, ["--model_name_or_path", opt_dir, "--data_path", pair_files[0], "--max_seq_len",
                                         96, "--lora_dim", 4, "--lora_module_name", "transformer.h.", "--output_dir",
                                         tmp_path / "rm"], monkeypatch, capsys)
    assert code == 2 and "--lora_module_name 'transformer.h.' matches no linear layer" in stderr
