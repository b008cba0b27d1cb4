"""DeepSpeed-Chat step-2 checkpoints, laid out as DeepSpeed-Chat saves them, converted to a reward model that
transformers loads and that scores as DeepSpeed-Chat's own first_pad rule did."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer, pipeline

from conftest import ROOT, entrypoint, main_exits, run_here, score_like_users
from utils.models import dschat_convert
from utils.models.dschat_convert import is_dschat_checkpoint
from utils.data.formatting import format_text
from utils.models.reward_model import score_positions
from utils.data.synthetic import generate_pairs


def _dschat_checkpoint(base_dir: Path, out: Path, prefix: str = "rwtranrsformer.", record_name: bool = True,
                       legacy: bool = False) -> Path:
    """What DeepSpeed-Chat's save_hf_format writes: the RewardModel state dict as pytorch_model.bin, the backbone's
    config.json and the tokenizer's vocabulary files (vocab.json and merges.txt), nothing else."""
    torch.manual_seed(0)
    backbone = AutoModel.from_pretrained(base_dir)
    v_head = torch.nn.Linear(backbone.config.word_embed_proj_dim if backbone.config.model_type == "opt"
                             else backbone.config.hidden_size, 1, bias=False)
    state = {prefix + k: v for k, v in backbone.state_dict().items()} | {"v_head.weight": v_head.weight.detach()}
    out.mkdir()
    torch.save(state, out / "pytorch_model.bin", _use_new_zipfile_serialization=not legacy)
    config = backbone.config.to_dict() | {"_name_or_path": str(base_dir)}
    if not record_name:
        del config["_name_or_path"]
    (out / "config.json").write_text(json.dumps(config))
    AutoTokenizer.from_pretrained(base_dir).backend_tokenizer.model.save(str(out))
    return out


def _dschat_scores(base_dir: Path, ckpt: Path, texts: list[str], num_padding: int) -> torch.Tensor:
    """DeepSpeed-Chat's RewardModel forward: v_head on every position, read before the first pad (= EOS) that
    follows num_padding_at_beginning of them."""
    state = torch.load(ckpt / "pytorch_model.bin", weights_only=True)
    prefix = "rwtranrsformer." if any(k.startswith("rwtranrsformer.") for k in state) else "rwtransformer."
    backbone = AutoModel.from_config(AutoConfig.from_pretrained(base_dir))
    backbone.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    tokenizer.pad_token = tokenizer.eos_token
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        values = backbone.eval()(**batch).last_hidden_state @ state["v_head.weight"][0]
    index = score_positions(batch["input_ids"], batch["attention_mask"], "first_pad", tokenizer.eos_token_id,
                            num_padding)
    return values.gather(1, index[:, None])[:, 0]


TEXTS = [format_text(r["prompt"], r[k], "dschat") + "<|endoftext|>" for r in generate_pairs(12, seed=3)
         for k in ("chosen", "rejected")]


@pytest.mark.parametrize("family, num_padding, prefix", [("opt", 1, "rwtranrsformer."), ("llama", 0, "rwtransformer.")])
def test_converted_model_scores_as_deepspeed_chat_did(request, tmp_path, family, num_padding, prefix, transformers4):
    base = request.getfixturevalue(f"{family}_dir")
    ckpt = _dschat_checkpoint(base, tmp_path / "dschat", prefix)
    assert is_dschat_checkpoint(ckpt) and not is_dschat_checkpoint(base)
    out = tmp_path / "converted"
    run_here(dschat_convert, [ckpt, out])
    assert (out / "model.safetensors").exists() and not (out / "pytorch_model.bin").exists()

    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 1 and model.score.out_features == 1
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.pad_token_id == tokenizer.pad_token_id != tokenizer.eos_token_id
    rm = pipeline("text-classification", model=str(out), function_to_apply="none", device="cpu")
    ours = torch.tensor([o["score"] for o in rm(TEXTS, batch_size=5)])
    expected = _dschat_scores(base, ckpt, TEXTS, num_padding)
    assert torch.allclose(ours, expected, atol=1e-5)
    (old,) = score_like_users([{"model_dir": str(out), "texts": TEXTS}], tmp_path, transformers4)  # RewardBench's 4.x
    assert old["version"] == "4.51.0" and torch.allclose(torch.tensor(old["pipeline"]), expected, atol=1e-5)


def test_rw_eval_takes_a_deepspeed_chat_folder_and_says_it_converted_it(opt_dir, tmp_path, monkeypatch, capsys):
    ckpt = _dschat_checkpoint(opt_dir, tmp_path / "dschat")
    proc = run_here(ROOT / "rw_eval.py", ["--model_name_or_path", ckpt, "--prompt", "Hi?", "--answer", "Hello.",
                                          "--output", tmp_path / "scores.json", "--check_pipeline"])
    assert "DeepSpeed-Chat step-2 checkpoint" in proc.stdout and "converted it" in proc.stdout
    text = format_text("Hi?", "Hello.", "dschat")
    expected = _dschat_scores(opt_dir, ckpt, [text], num_padding=1)[0].item()
    assert json.loads((tmp_path / "scores.json").read_text())[0]["score"] == pytest.approx(expected, abs=1e-5)
    code, _, stderr = main_exits(ROOT / "rw_eval.py", ["--model_name_or_path", ckpt, "--data_path", "synthetic:40",
                                                      "--write_normalization"], monkeypatch, capsys)
    assert code == 2 and "convert the DeepSpeed-Chat checkpoint first" in stderr


def test_conversion_errors_name_what_is_missing(opt_dir, tmp_path, monkeypatch, capsys):
    ckpt = _dschat_checkpoint(opt_dir, tmp_path / "dschat", record_name=False)
    proc = run_here(dschat_convert, [ckpt, tmp_path / "out"], check=False)  # one line, no traceback
    assert proc.returncode == 2 and "pass --tokenizer" in proc.stderr and "Traceback" not in proc.stderr
    rw_eval = ["--model_name_or_path", ckpt, "--prompt", "Hi?", "--answer", "Hi."]
    code, _, stderr = main_exits(ROOT / "rw_eval.py", rw_eval, monkeypatch, capsys)
    assert code == 2 and "pass --tokenizer" in stderr
    code, _, stderr = main_exits(dschat_convert, [opt_dir, tmp_path / "out2"], monkeypatch, capsys)
    assert code == 2 and "is not a DeepSpeed-Chat reward model" in stderr

    def succeeds(main, *args):
        monkeypatch.setattr(sys, "argv", ["main", *map(str, args)])
        main()
        return capsys.readouterr().out

    assert "converted it" in succeeds(entrypoint(ROOT / "rw_eval.py").main, *rw_eval, "--tokenizer", opt_dir)
    assert "converted to" in succeeds(dschat_convert.main, ckpt, tmp_path / "out", "--tokenizer", opt_dir)
    legacy = _dschat_checkpoint(opt_dir, tmp_path / "legacy", legacy=True)  # torch's old format: no memory map
    assert is_dschat_checkpoint(legacy)
    assert "converted to" in succeeds(dschat_convert.main, legacy, tmp_path / "out3")