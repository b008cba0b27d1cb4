"""Step 2's shared-prompt row against the other way to compute a pair's prompt once: the prompt by itself with
causal attention, then chosen and rejected as a batch of two continuing from its key/value cache.

Both give the same scores and gradients; this times one forward and backward of each over the same length-grouped
batches of HH helpful-base pairs, in one run. Kept as the evidence for step 2's choice (docs/PERFORMANCE.md).
    python benchmarks/prefix_cache_probe.py [--hidden 512 --layers 8 --heads 8]
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import OPTConfig, OPTForSequenceClassification

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_data as data  # noqa: E402
from reward_bench import GPT2_VOCAB, HH_FILE  # noqa: E402

from utils.models.reward_model import RewardModel  # noqa: E402
from utils.models.shared_prompt import collate_shared_prompt, shared_length  # noqa: E402


def shared_row_loss(model: RewardModel, batch: list[dict], pad: int) -> torch.Tensor:
    rows = collate_shared_prompt(batch, pad)
    scores = model(rows["input_ids"], rows["attention_mask"], rows["position_ids"]).gather(1, rows["score_index"])
    return -F.logsigmoid(scores[:, 0] - scores[:, 1]).mean()


def prefix_cache_loss(model: OPTForSequenceClassification, batch: list[dict], pad: int) -> torch.Tensor:
    """Prompts left-padded and run once; their cache repeated for the two answers, right-padded."""
    shared = [shared_length(p["chosen"], p["rejected"]) for p in batch]
    width = max(shared)
    ids = torch.full((len(batch), width), pad)
    mask, positions = torch.zeros_like(ids), torch.zeros_like(ids)
    for i, (pair, n) in enumerate(zip(batch, shared)):
        ids[i, width - n:], mask[i, width - n:] = torch.tensor(pair["chosen"][:n]), 1
        positions[i, width - n:] = torch.arange(n)
    rests = [(n, pair[side][n:]) for pair, n in zip(batch, shared) for side in ("chosen", "rejected")]
    length = max(len(rest) for _, rest in rests)
    answer_ids = torch.full((len(rests), length), pad)
    answer_mask, answer_positions = torch.zeros_like(answer_ids), torch.zeros_like(answer_ids)
    for j, (n, rest) in enumerate(rests):
        answer_ids[j, :len(rest)], answer_mask[j, :len(rest)] = torch.tensor(rest), 1
        answer_positions[j, :len(rest)] = torch.arange(n, n + len(rest))
    last = torch.tensor([len(rest) - 1 for _, rest in rests])
    cache = model.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True).past_key_values
    cache.batch_repeat_interleave(2)
    hidden = model.model(input_ids=answer_ids, attention_mask=torch.cat([mask.repeat_interleave(2, 0), answer_mask], 1),
                         position_ids=answer_positions, past_key_values=cache, use_cache=True).last_hidden_state
    scores = model.score(hidden).squeeze(-1).gather(1, last[:, None]).view(-1, 2)
    return -F.logsigmoid(scores[:, 0] - scores[:, 1]).mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=224)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pairs = data.load_pairs(HH_FILE, 0, 1234)
    with tempfile.TemporaryDirectory() as work:
        vocab = data.train_tokenizer([t for row in pairs.rows for t in data.texts(row)], Path(work), GPT2_VOCAB)
        tokenizer = data.trainer_tokenizer(Path(work))
    items = [{"chosen": p.chosen, "rejected": p.rejected} for p in data.encode(pairs.rows[:900], tokenizer)
             if max(len(p.chosen), len(p.rejected)) <= 512
             and shared_length(p.chosen, p.rejected) < min(len(p.chosen), len(p.rejected))]
    random.Random(0).shuffle(items)
    items = sorted(items[:8 * args.batches], key=lambda p: len(p["chosen"]) + len(p["rejected"]))  # length-grouped
    batches = [items[i:i + 8] for i in range(0, len(items), 8)]
    torch.manual_seed(0)
    model = OPTForSequenceClassification(OPTConfig(
        vocab_size=vocab, hidden_size=args.hidden, word_embed_proj_dim=args.hidden, ffn_dim=4 * args.hidden,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, max_position_embeddings=1024,
        dropout=0.0, attention_dropout=0.0, num_labels=1, pad_token_id=tokenizer.pad_token_id))
    wrapped, pad = RewardModel(model).train(), tokenizer.pad_token_id
    ways = {"shared row": lambda b: shared_row_loss(wrapped, b, pad),
            "prefix cache": lambda b: prefix_cache_loss(model, b, pad)}
    grads = {}
    for name, loss_of in ways.items():
        model.zero_grad()
        loss_of(batches[0]).backward()
        grads[name] = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    gap = max((a - b).abs().max().item() for a, b in zip(*grads.values()))
    seconds = dict.fromkeys(ways, 0.0)
    for _ in range(2):  # alternating, so that a change in the host's speed hits both
        for name, loss_of in ways.items():
            started = time.perf_counter()
            for batch in batches:
                model.zero_grad()
                loss_of(batch).backward()
            seconds[name] += time.perf_counter() - started
    print(f"{args.layers} layers x {args.hidden}, {len(batches)} batches of 8 pairs; gradients differ by {gap:.1e}")
    for name, s in seconds.items():
        print(f"  {name}: {s / 2:.2f} s per pass over the batches")
    print(f"prefix cache / shared row: {seconds['prefix cache'] / seconds['shared row']:.2f}x the time")


if __name__ == "__main__":
    main()
