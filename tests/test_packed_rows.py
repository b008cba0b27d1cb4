"""Rows that hold more than one sequence (shared-prompt pairs, packed SFT segments) give the scores, losses and
gradients of the sequences one by one; length-grouped batches stay seeded, complete and independent of the number
of processes; and the throughput figures add up."""
import pytest
import torch

from utils.data.encoding import (
    IGNORE,
    collate_pairs,
    collate_segments,
    collate_sft,
    encode_pairs,
    encode_sft,
    pack_segments,
)
from utils.data.sampling import MEGA_BATCH, TrainSampler
from utils.data.synthetic import generate_pairs
from utils.engine.throughput import Throughput, matmul_parameters
from utils.models.loading import load_causal_lm, load_reward_model, load_tokenizer
from utils.models.reward_model import RewardModel
from utils.models.shared_prompt import collate_shared_prompt, pair_row_length, shared_length
from utils.objectives.reward import RewardObjective
from utils.objectives.sft import SFTObjective


def test_the_shared_part_is_the_common_token_prefix_and_leaves_each_end_token():
    assert shared_length([1, 2, 3, 9], [1, 2, 4, 9]) == 2
    assert shared_length([1, 2, 9], [1, 2, 3, 4, 9]) == 2  # chosen is a prefix of rejected: its EOS stays its own
    assert shared_length([1, 2, 9], [1, 2, 9]) == 2
    batch = collate_shared_prompt([{"chosen": [5, 6, 7, 9], "rejected": [5, 6, 8, 8, 9]}, {"chosen": [4, 9],
                                                                                          "rejected": [3, 9]}], 0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 9, 8, 8, 9], [4, 9, 3, 9, 0, 0, 0]]
    assert batch["position_ids"].tolist()[0] == [0, 1, 2, 3, 2, 3, 4]
    assert batch["score_index"].tolist() == [[3, 6], [1, 3]]
    assert batch["num_tokens"].item() == 7 + 4
    sees = batch["attention_mask"][0, 0].int().tolist()
    assert sees[4] == [1, 1, 0, 0, 1, 0, 0]  # the rejected answer's first token: the prompt and itself
    assert sees[3] == [1, 1, 1, 1, 0, 0, 0]  # the chosen end: the prompt and the chosen answer
    assert batch["attention_mask"][1, 0, 5].int().tolist() == [0, 0, 0, 0, 0, 1, 0]  # a pad sees itself only


def _pairs(tokenizer, n=12):
    rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in generate_pairs(n, seed=3)]
    rows[0]["prompt"] = rows[0]["prompt"] * 3  # a long prompt
    rows[1]["rejected"] = rows[1]["chosen"] + " And more."  # the chosen answer is a prefix of the rejected one
    return encode_pairs(rows, tokenizer, "dschat", 512, "truncate")[0]


@pytest.mark.parametrize("family", ["opt", "llama"])
def test_scores_loss_and_gradients_match_two_sequences(family, opt_dir, llama_dir):
    model_dir = str(opt_dir if family == "opt" else llama_dir)
    tokenizer = load_tokenizer(model_dir, "end", append_eos=True)
    pairs = _pairs(tokenizer)
    assert any(shared_length(p["chosen"], p["rejected"]) > 5 for p in pairs)
    objective = RewardObjective("end", tokenizer.pad_token_id, 0, center_rewards_coefficient=0.1)
    results = []
    for batch in (collate_pairs(pairs, tokenizer.pad_token_id), collate_shared_prompt(pairs, tokenizer.pad_token_id)):
        torch.manual_seed(0)
        model = RewardModel(load_reward_model(model_dir, tokenizer, dropout=0.0, gradient_checkpointing=False))
        loss, _ = objective(model, batch)
        loss.backward()
        with torch.no_grad():
            scores = objective.scores(model, batch)[2]
        results.append((scores, loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (plain_scores, plain_loss, plain_grads), (shared_scores, shared_loss, shared_grads) = results
    assert torch.allclose(shared_scores, plain_scores, atol=1e-5)
    assert shared_loss.item() == pytest.approx(plain_loss.item(), abs=1e-5)
    for name, grad in plain_grads.items():
        assert torch.allclose(shared_grads[name], grad, atol=1e-5), name
    computed = sum(pair_row_length(p) for p in pairs)
    assert computed < 0.9 * sum(len(p["chosen"]) + len(p["rejected"]) for p in pairs)


def test_length_grouping_is_seeded_complete_and_the_same_for_any_world_size():
    """A global batch is what the ranks read at one step, so it is built from every rank's own sampler (planted:
    reseed the generator with seed + rank before the batches are shuffled; rank 1 then reads its half of other
    batches than rank 0, and every other check here passes)."""
    rows = 1007  # two ranks need one row repeated, which completes a batch: it must not reshuffle the others
    lengths = [(i * 37) % 101 + 1 for i in range(rows)]

    def batches(world, seed=5, epoch=0, grouped=True):
        reads = []
        for rank in range(world):
            sampler = TrainSampler(rows, 8 // world, seed, world, rank, lengths if grouped else None)
            sampler.set_epoch(epoch)
            reads.append(list(sampler))
        steps = range(0, len(reads[0]), 8 // world)
        return [sorted(i for read in reads for i in read[step:step + 8 // world]) for step in steps]

    grouped = batches(1)
    assert sorted(i for b in grouped for i in b) == list(range(rows))
    assert grouped == batches(1) and grouped[:-1] == batches(2)[:-1]  # the same global batches with 1 or 2 processes
    assert set(batches(2)[-1]) > set(grouped[-1]) and len(batches(2)[-1]) == len(grouped[-1]) + 1
    assert grouped != batches(1, seed=6) and grouped != batches(1, epoch=1)

    def padding(bs):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in bs) / sum(lengths)

    assert padding(grouped) < 0.05 < padding(batches(1, grouped=False))
    assert len(grouped) == 126 and MEGA_BATCH * 8 < rows  # more than one mega-batch

    # Two ranks split each global batch and together read every row; skip resumes part-way.
    ranks = [TrainSampler(rows, 4, 5, 2, r, lengths) for r in range(2)]
    assert set(ranks[0]) | set(ranks[1]) == set(range(rows)) and len(ranks[0]) == len(ranks[1]) == 504
    ranks[0].skip = 12
    assert list(ranks[0]) == list(TrainSampler(rows, 4, 5, 2, 0, lengths))[12:] and len(ranks[0]) == 492


def test_pad_to_max_len_pads_every_row_as_deepspeed_chat():
    pairs = [{"chosen": [5, 6, 9], "rejected": [5, 7, 7, 9]}]
    batch = collate_pairs(pairs, pad_id=0, width=8)
    assert batch["input_ids"].tolist() == [[5, 6, 9, 0, 0, 0, 0, 0], [5, 7, 7, 9, 0, 0, 0, 0]]
    assert batch["attention_mask"].sum().item() == batch["num_tokens"].item() == 7


def test_throughput_rates_pad_fraction_and_mfu(monkeypatch):
    clock = iter([100.0, 102.0])
    monkeypatch.setattr("utils.engine.throughput.time.perf_counter", lambda: next(clock))
    meter = Throughput(torch.nn.Linear(10, 10), peak_flops_per_device=1e6)  # 110 parameters
    meter.add({"num_tokens": torch.tensor(30), "input_ids": torch.zeros(4, 10)})
    assert meter.counts() == {"tokens": 30.0, "positions": 40.0}
    rates = meter.step(tokens=600.0, positions=800.0, world_size=2)  # the counts summed over two ranks, 2 s
    assert rates == pytest.approx({"tokens_per_s": 300.0, "pad_fraction": 0.25, "mfu": 6 * 110 * 300 / 2e6})
    assert meter.counts() == {"tokens": 0.0, "positions": 0.0}


def test_mfu_counts_the_parameters_that_multiply(opt_dir):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    rm = AutoModelForSequenceClassification.from_pretrained(opt_dir, num_labels=1)
    lm = AutoModelForCausalLM.from_pretrained(opt_dir)
    tables = sum(m.weight.numel() for m in rm.modules() if isinstance(m, torch.nn.Embedding))
    total = sum(p.numel() for p in rm.parameters())
    assert matmul_parameters(rm) == total - tables  # token and position tables are lookups
    vocab_matmul = lm.get_output_embeddings().weight.numel()  # tied to the token embeddings, yet a matmul
    assert matmul_parameters(lm) == sum(p.numel() for p in lm.parameters()) - tables + vocab_matmul


def test_segments_pack_whole_texts_with_their_own_positions_and_attention():
    texts = [{"input_ids": [1, 2, 3], "labels": [IGNORE, 2, 3]}, {"input_ids": [4, 5], "labels": [4, 5]},
             {"input_ids": [6, 7, 8, 9], "labels": [6, 7, 8, 9]}]
    rows = pack_segments(texts, block_size=6)
    assert [r["segments"] for r in rows] == [[3, 2], [4]]
    assert rows[0]["labels"] == [IGNORE, 2, 3, IGNORE, 5]  # nothing in its own text predicts a text's first token
    batch = collate_segments(rows, pad_id=0)
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert batch["attention_mask"][0, 0, 4].int().tolist() == [0, 0, 0, 1, 1]
    assert batch["attention_mask"][1, 0, 4].int().tolist() == [0, 0, 0, 0, 1]  # a pad sees itself only
    assert batch["num_tokens"].item() == 9


@pytest.mark.parametrize("family", ["opt", "llama"])
def test_packed_segments_give_the_loss_and_gradients_of_unpacked_texts(family, opt_dir, llama_dir):
    model_dir = str(opt_dir if family == "opt" else llama_dir)
    tokenizer = load_tokenizer(model_dir, "end", append_eos=False)
    rows = [{k: r[k] for k in ("prompt", "chosen")} for r in generate_pairs(10, seed=4)]
    texts, _ = encode_sft(rows, tokenizer, "dschat", 96, "truncate", train_on_prompt=family == "llama")
    packed = pack_segments(texts, block_size=96)
    assert len(packed) < len(texts) and max(len(r["segments"]) for r in packed) > 2
    objective = SFTObjective()
    results = []
    for batch in (collate_sft(texts, tokenizer.pad_token_id), collate_segments(packed, tokenizer.pad_token_id)):
        torch.manual_seed(0)
        model = load_causal_lm(model_dir, tokenizer, dropout=0.0, gradient_checkpointing=False)
        loss, _ = objective(model, batch)
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (plain_loss, plain_grads), (packed_loss, packed_grads) = results
    assert packed_loss.item() == pytest.approx(plain_loss.item(), abs=1e-5)
    for name, grad in plain_grads.items():
        assert torch.allclose(packed_grads[name], grad, atol=1e-5), name
