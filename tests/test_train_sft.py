"""Step 1 end to end on CPU: train, export as a causal LM, generate, compare, and feed step 2."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, pipeline

from conftest import ROOT, STEP1, main_exits, read_metrics, run_here, run_step1, run_step2
from utils.data.encoding import collate_sft, encode_sft
from utils.data.formatting import format_text
from utils.data.sources import SFT_FIELDS, read_source
from utils.engine.loop import eval_loader
from utils.models.loading import load_reward_model, load_tokenizer
from utils.objectives.metrics import pair_metrics
from utils.objectives.sft import SFTObjective

PROMPT_EVAL = ROOT / "training" / "step1_supervised_finetuning" / "prompt_eval.py"


def _sft(model_dir, pair_files, out, *extra, nproc=1):
    train, evals = pair_files
    return out, run_step1(["--model_name_or_path", model_dir, "--data_path", train, "--eval_data_path", evals,
               "--data_split", "1,0,0", "--per_device_eval_batch_size", 16, "--max_seq_len", 96,
               "--learning_rate", 3e-3, "--dropout", 0.0, "--dtype", "fp32", "--output_dir", out, *extra],
              nproc=nproc, launcher="torchrun").stdout  # torchrun: one process fewer than deepspeed's


def _perplexity(model_dir, eval_file, train_on_prompt):
    """The eval perplexity recomputed from an exported directory, as a user would load it."""
    tokenizer = load_tokenizer(str(model_dir), "end", append_eos=False)
    rows = read_source(str(eval_file), SFT_FIELDS)[0]["train"]
    texts, _ = encode_sft(rows, tokenizer, "dschat", 96, "truncate", train_on_prompt)
    loader = eval_loader(texts, 16, lambda b: collate_sft(b, tokenizer.pad_token_id))
    with torch.no_grad():
        return SFTObjective().evaluate(AutoModelForCausalLM.from_pretrained(model_dir).eval(), loader, 1000)


@pytest.mark.parametrize("family, extra", [
    ("opt", ["--zero_stage", 1, "--per_device_train_batch_size", 4, "--packing", "segments"]),
    ("llama", ["--zero_stage", 3, "--per_device_train_batch_size", 4, "--packing", "--train_on_prompt"]),
])
def test_sft_learns_exports_and_generates(request, pair_files, tmp_path, family, extra):
    model_dir = request.getfixturevalue(f"{family}_dir")
    out, stdout = _sft(model_dir, pair_files, tmp_path / "sft", "--num_train_epochs", 2, "--eval_interval", 10,
                       "--print_loss", *extra)
    assert "epoch 0 step 1: loss" in stdout and stdout.strip().splitlines()[-1].startswith("perplexity=")
    evals = [m for m in read_metrics(out) if m["split"] == "eval"]
    assert [m["step"] for m in evals[:3]] == [0, 10, 20]
    assert evals[-1]["perplexity"] < 0.2 * evals[0]["perplexity"]
    final = json.loads((out / "eval_results.json").read_text())
    assert final == {k: evals[-1][k] for k in ("loss", "perplexity", "tokens")}

    # The export is a plain causal LM whose eval perplexity is the trainer's (ZeRO-3: gathered weights).
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    card = (out / "README.md").read_text()
    assert "pipeline_tag: text-generation" in card and f"| {final['perplexity']:.4g} |" in card
    assert _perplexity(out, pair_files[1], "--train_on_prompt" in extra)["perplexity"] == pytest.approx(final["perplexity"], rel=1e-4)

    # It generates through the pipeline, and stops at the EOS id that ended every training text.
    generator = pipeline("text-generation", model=str(out), device="cpu")
    assert generator.model.generation_config.eos_token_id == generator.tokenizer.eos_token_id
    assert generator.model.generation_config.pad_token_id == generator.tokenizer.pad_token_id is not None
    prompt = " Human: What is the capital of France? Assistant:"
    text = generator(prompt, max_new_tokens=20, do_sample=False, return_full_text=False)[0]["generated_text"]
    base = pipeline("text-generation", model=str(model_dir), device="cpu")
    assert text.strip() and text != base(prompt, max_new_tokens=20, do_sample=False,
                                         return_full_text=False)[0]["generated_text"]


def test_two_processes_zero2_match_one(opt_dir, pair_files, tmp_path):
    """Loss per labelled token of the whole global batch: the split among processes changes nothing."""
    common = ["--num_train_epochs", 1, "--zero_stage", 2, "--eval_iters", 1000]
    one, _ = _sft(opt_dir, pair_files, tmp_path / "one", *common, "--per_device_train_batch_size", 8)
    two, _ = _sft(opt_dir, pair_files, tmp_path / "two", *common, "--per_device_train_batch_size", 4, nproc=2)
    losses = [[m["loss"] for m in read_metrics(out) if m["split"] == "train"] for out in (one, two)]
    assert len(losses[0]) == len(losses[1]) == 32
    assert losses[1] == pytest.approx(losses[0], abs=1e-4)
    finals = [json.loads((out / "eval_results.json").read_text()) for out in (one, two)]
    assert finals[1]["tokens"] == finals[0]["tokens"]
    assert finals[1]["perplexity"] == pytest.approx(finals[0]["perplexity"], rel=1e-4)


def test_step2_starts_from_the_step1_output(opt_dir, pair_files, tmp_path):
    """The reward model learns above chance from the fine-tuned backbone, and its export scores as the trainer did
    (planted: swap chosen and rejected in bt_loss, and it ranks most eval pairs the wrong way round)."""
    sft, _ = _sft(opt_dir, pair_files, tmp_path / "sft", "--per_device_train_batch_size", 8)
    tokenizer = load_tokenizer(str(sft), "end", append_eos=True)
    rm = load_reward_model(str(sft), tokenizer, None, False)
    lm = AutoModelForCausalLM.from_pretrained(sft)
    for name, value in lm.model.state_dict().items():  # the backbone is the fine-tuned one, not a fresh init
        assert torch.equal(rm.model.state_dict()[name], value), name

    train, evals = pair_files
    out = tmp_path / "rm"
    proc = run_step2(["--model_name_or_path", sft, "--data_path", train, "--eval_data_path", evals,
                      "--data_split", "0,1,0", "--max_seq_len", 96, "--learning_rate", 3e-3, "--dtype", "fp32",
                      "--per_device_train_batch_size", 8, "--output_dir", out])
    final = json.loads((out / "eval_results.json").read_text())
    assert proc.stdout.strip().splitlines()[-1] == f"accuracy={final['accuracy']:.4f}"
    start = next(m for m in read_metrics(out) if m["split"] == "eval")
    assert final["accuracy"] >= 0.75 and final["accuracy"] > start["accuracy"] + 0.2  # chance is 0.5
    scorer = pipeline("text-classification", model=str(out), function_to_apply="none", device="cpu")
    rows = read_source(str(evals))[0]["train"]
    scores = [[o["score"] for o in scorer([format_text(r["prompt"], r[k], "dschat") for r in rows], batch_size=16)]
              for k in ("chosen", "rejected")]
    assert pair_metrics(*torch.tensor(scores))["accuracy"] == pytest.approx(final["accuracy"])


def test_prompt_eval_shows_both_models_side_by_side(opt_dir, pair_files, tmp_path):
    sft, _ = _sft(opt_dir, pair_files, tmp_path / "sft", "--per_device_train_batch_size", 8, "--num_train_epochs", 2)

    def prompt_eval(name, *extra):
        proc = run_here(PROMPT_EVAL, ["--model_name_or_path_baseline", opt_dir, "--model_name_or_path_finetune", sft,
                                      "--max_new_tokens", 12, "--prompt", "What color is snow?", "--output",
                                      tmp_path / name, *extra])
        return proc.stdout, json.loads((tmp_path / name).read_text())["generations"]

    shown, greedy = prompt_eval("greedy.json")
    assert "=== What color is snow?" in shown and "baseline" in shown and "fine-tuned" in shown
    direct = pipeline("text-generation", model=str(sft), device="cpu")(
        " Human: What color is snow? Assistant:", max_new_tokens=12, do_sample=False, return_full_text=False)
    assert greedy[0]["finetuned"] == direct[0]["generated_text"] != greedy[0]["baseline"]
    sampling = ["--do_sample", "--top_k", 5, "--top_p", 0.9, "--temperature", 1.5, "--seed", 3]
    assert prompt_eval("s1.json", *sampling)[1] == prompt_eval("s2.json", *sampling)[1]  # the seed repeats sampling


def test_step1_errors_and_help(opt_dir, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "sft_only.jsonl"
    bad.write_text(json.dumps({"prompt": "Hi?", "chosen": "Hello."}) + "\n" + json.dumps({"prompt": "Hi?"}) + "\n")
    code, _, stderr = main_exits(STEP1, ["--model_name_or_path", opt_dir, "--sft_only_data_path", bad, "--output_dir",
                                         tmp_path], monkeypatch, capsys)
    assert code == 2 and f"error: {bad}:2: field 'chosen' is missing" in stderr and "Traceback" not in stderr
    code, out, _ = main_exits(STEP1, ["--help"], monkeypatch, capsys)
    for flag in ("--data_path", "--data_split", "--sft_only_data_path", "--print_loss", "--add_eot_token",
                 "--train_on_prompt", "--packing", "--zero_stage", "--max_seq_len"):
        assert flag in out
