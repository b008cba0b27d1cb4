"""Step 2 end to end on CPU: train, export, and reload through transformers exactly as users will."""
import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from conftest import LLAMA3_LIKE_CHAT, read_metrics, run_step2
from utils.data.encoding import collate_pairs, encode_pairs
from utils.data.formatting import format_text
from utils.data.sources import read_source
from utils.models.loading import DEDICATED_PAD, load_tokenizer
from utils.models.reward_model import RewardModel
from utils.objectives.metrics import pair_metrics
from utils.objectives.reward import RewardObjective


def _train(model_dir, pair_files, out, *extra):
    train, evals = pair_files
    run_step2(["--model_name_or_path", model_dir, "--data_path", train, "--eval_data_path", evals,
               "--per_device_train_batch_size", 8, "--per_device_eval_batch_size", 16, "--max_seq_len", 96,
               "--learning_rate", 3e-3, "--dropout", 0.0, "--dtype", "fp32", "--output_dir", out, *extra])
    return out


def _pipeline_scores(out, rows, template="dschat"):
    pipe = pipeline("text-classification", model=str(out), function_to_apply="none", device="cpu")
    texts = [format_text(r["prompt"], r[k], template, pipe.tokenizer) for k in ("chosen", "rejected") for r in rows]
    scores = torch.tensor([o["score"] for o in pipe(texts, batch_size=7)], dtype=torch.float64)
    return scores.chunk(2)


@pytest.fixture(scope="module")
def one_process(opt_dir, pair_files, tmp_path_factory):
    """OPT-like, ZeRO 0, bt at the end token, one epoch: the export test's first case, and the run that 2 processes
    under ZeRO 2 and 3 must match; trained once for both."""
    return _train(opt_dir, pair_files, tmp_path_factory.mktemp("one") / "rm", "--num_train_epochs", 1, "--eval_iters",
                  1000)


@pytest.mark.parametrize("family, score_token, zero_stage, loss", [
    ("opt", "end", 0, "bt"),
    ("llama_chat", "end", 0, "bt"),
    ("opt", "first_pad", 1, "dschat"),
    ("llama", "end", 2, "bt"),
    ("llama", "first_pad", 3, "bt"),
    ("opt", "end", 3, "dschat"),
    ("gpt2", "end", 0, "bt"),
])
def test_export_scores_in_pipeline_as_in_training(request, pair_files, tmp_path, family, score_token, zero_stage,
                                                  loss):
    """GPT-2-like is pad == EOS, which `end` replaces with a pad of its own: the exported pooling would otherwise
    skip the scored EOS (planted: drop the pad == EOS clause of use_dedicated_pad, and the pipeline's scores differ
    from the trainer's)."""
    model_dir = request.getfixturevalue(f"{family}_dir")
    template = "chat" if family.endswith("chat") else "dschat"
    if (family, score_token, zero_stage, loss) == ("opt", "end", 0, "bt"):  # the defaults: the same flags
        out = request.getfixturevalue("one_process")
    else:
        out = _train(model_dir, pair_files, tmp_path / "rm", "--template", template, "--score_token", score_token,
                     "--zero_stage", zero_stage, "--loss", loss, "--num_train_epochs", 1, "--eval_iters", 1000)

    # The directory is a plain transformers reward model.
    config = json.loads((out / "config.json").read_text())
    assert len(config["id2label"]) == 1 and config["pad_token_id"] is not None
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 1 and model.config.pad_token_id is not None
    assert model.score.out_features == 1, "RewardBench and RLHF code read the head named score"
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    exported = AutoTokenizer.from_pretrained(out)
    if family == "llama_chat":
        assert exported.chat_template == LLAMA3_LIKE_CHAT
    assert config["pad_token_id"] == exported.pad_token_id
    if score_token == "end":  # the base's own pad (OPT), else a dedicated one, never the EOS
        assert exported.pad_token == ("<pad>" if family == "opt" else DEDICATED_PAD) != exported.eos_token

    # The pipeline reproduces the trainer's own final evaluation (ZeRO-3: the export gathered the real weights).
    final = json.loads((out / "eval_results.json").read_text())

    # The model card names the base model, the data and the recipe, and gives the final figures.
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-classification\n")
    assert f"`{model_dir}`" in card and str(pair_files[0]) in card
    assert f"| score token, loss | {score_token}, {loss} |" in card and f"{final['accuracy']:.4g}" in card
    eval_rows = read_source(str(pair_files[1]))[0]["train"]
    chosen, rejected = _pipeline_scores(out, eval_rows, template)
    again = pair_metrics(chosen, rejected)
    for key in ("accuracy", "chosen_mean", "rejected_mean", "margin_mean", "loss"):
        assert again[key] == pytest.approx(final[key], abs=1e-4), key
    assert final["pairs"] == len(eval_rows)

    # Score by score: the trainer's scoring code on padded batches equals the pipeline's.
    tokenizer = load_tokenizer(str(out), score_token, append_eos=template != "chat")
    pairs, _ = encode_pairs(eval_rows, tokenizer, template, 96, "truncate")
    batch = collate_pairs(pairs, tokenizer.pad_token_id)
    objective = RewardObjective(score_token, tokenizer.pad_token_id, 1 if family == "opt" else 0)
    with torch.no_grad():
        ours = objective.scores(RewardModel(model.eval()), batch)[2].double()
    assert torch.allclose(ours, torch.cat([chosen, rejected]), atol=1e-4)


def test_training_learns_and_logs(opt_dir, pair_files, tmp_path):
    out = _train(opt_dir, pair_files, tmp_path / "rm", "--data_split", "0,1,0", "--num_train_epochs", 3,
                 "--eval_interval", 16,
                 "--enable_tensorboard", "--tensorboard_path", tmp_path / "tb")
    metrics = read_metrics(out)
    evals = [m for m in metrics if m["split"] == "eval"]
    assert [m["step"] for m in evals] == [0, 16, 32, 48, 64, 80, 96]
    assert evals[-1]["accuracy"] > evals[0]["accuracy"] + 0.2
    train = [m for m in metrics if m["split"] == "train"]
    assert len(train) == 96
    # Shared-prompt rows in length-grouped batches: little padding, and the rates that go with it.
    assert sum(m["positions"] - m["tokens"] for m in train) / sum(m["positions"] for m in train) < 0.05
    assert all(m["tokens_per_s"] > 0 and 0 < m["mfu"] < 1 for m in train)
    assert list((tmp_path / "tb").iterdir())


def _loss_at(out, step):
    return next(m["loss"] for m in read_metrics(out) if m["split"] == "train" and m["step"] == step)


@pytest.mark.parametrize("zero_stage, launcher", [(2, "deepspeed"), (3, "torchrun")])
def test_two_processes_match_one_with_the_same_global_batch(opt_dir, pair_files, one_process, tmp_path, zero_stage,
                                                            launcher):
    """Against one process without ZeRO: neither the partitioning nor the split of the batch changes the losses
    (planted: every rank reads rank 0's share of the batches, and step 10's loss differs)."""
    common = ["--num_train_epochs", 1, "--eval_iters", 1000, "--zero_stage", zero_stage]
    one = one_process
    train, evals = pair_files
    two = tmp_path / "two"
    run_step2(["--model_name_or_path", opt_dir, "--data_path", train, "--eval_data_path", evals,
               "--per_device_train_batch_size", 4, "--per_device_eval_batch_size", 16, "--max_seq_len", 96,
               "--learning_rate", 3e-3, "--dropout", 0.0, "--dtype", "fp32", "--output_dir", two, *common], nproc=2,
              launcher=launcher)
    assert _loss_at(two, 10) == pytest.approx(_loss_at(one, 10), abs=1e-3)
    one_final = json.loads((one / "eval_results.json").read_text())
    two_final = json.loads((two / "eval_results.json").read_text())
    assert two_final["pairs"] == one_final["pairs"]
    assert two_final["loss"] == pytest.approx(one_final["loss"], abs=1e-3)
