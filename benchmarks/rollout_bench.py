"""Step 3's two shared-prompt paths against the plain ones, side by side in one run on one machine: generation
(each prompt computed once for its K samples, against computing it K times, and against bare `generate` with
`num_return_sequences=K`) and the actor's training pass (one row per prompt, against one row per answer).

The prompts are HH helpful-base's, formatted as step 2 formats them; the model is an OPT-shaped random-weight model
with a tokenizer trained on those texts. Answers run to the full length (no EOS), so every path generates the same
number of tokens. Ratios come from this one run; absolute times depend on the machine.
    python benchmarks/rollout_bench.py --out benchmarks/results/rollout_latest.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import OPTConfig, OPTForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_data as data  # noqa: E402
from reward_bench import HH_FILE  # noqa: E402

from utils.data.formatting import format_text  # noqa: E402
from utils.models.loading import load_causal_lm, load_tokenizer  # noqa: E402
from utils.objectives.rollout import actions, encode_prompts, sample, sampling_config, token_log_probs  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/rollout_latest.json"))
    parser.add_argument("--prompts", type=int, default=8, help="Prompts per rollout. Default: %(default)s")
    parser.add_argument("--k", type=int, default=4, help="Answers per prompt. Default: %(default)s")
    parser.add_argument("--max_prompt_seq_len", type=int, default=256)
    parser.add_argument("--max_answer_seq_len", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="Timed repeats of each path; the median is kept.")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


def median_seconds(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    pairs = data.load_pairs(HH_FILE, 0, seed=0)
    prompts = [format_text(row["prompt"], "", data.TEMPLATE) for row in pairs.rows[:args.prompts]]
    with tempfile.TemporaryDirectory() as work:
        model_dir = Path(work)
        vocab = data.train_tokenizer([t for row in pairs.rows[:2000] for t in data.texts(row)], model_dir, 8000)
        tokenizer = load_tokenizer(str(model_dir), "end", append_eos=False)
        torch.manual_seed(0)
        OPTForCausalLM(OPTConfig(vocab_size=vocab, hidden_size=args.hidden, word_embed_proj_dim=args.hidden,
                                 ffn_dim=4 * args.hidden, num_hidden_layers=args.layers,
                                 num_attention_heads=args.hidden // 64, max_position_embeddings=2048,
                                 bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)).save_pretrained(model_dir)
        model = load_causal_lm(str(model_dir), tokenizer, 0.0, False).eval()
    ids, mask, cut = encode_prompts(prompts, tokenizer, args.max_prompt_seq_len)
    config = sampling_config(tokenizer, args.max_answer_seq_len, 1.0)
    config.eos_token_id = None  # every answer runs to the full length, on every path
    k, new_tokens = args.k, args.prompts * args.k * args.max_answer_seq_len

    def bare() -> None:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model.generate(input_ids=ids, attention_mask=mask, generation_config=config, num_return_sequences=k)

    generation = {
        "prefill_once": median_seconds(lambda: sample(model, tokenizer, ids, mask, k, config, 0), args.repeats),
        "plain": median_seconds(lambda: sample(model, tokenizer, ids, mask, k, config, 0, prefill_once=False),
                                args.repeats),
        "bare_generate": median_seconds(bare, args.repeats)}
    rollout = sample(model, tokenizer, ids, mask, k, config, 0)
    answer = actions(rollout)
    model.train()

    def training_pass(rows: int) -> None:
        model.zero_grad()
        log_probs, _ = token_log_probs(model, rollout, 1.0, rows)
        (log_probs * answer).sum().backward()

    training = {"one_row_per_prompt": median_seconds(lambda: training_pass(k), args.repeats),
                "one_row_per_answer": median_seconds(lambda: training_pass(1), args.repeats)}
    result = {
        "prompts": args.prompts, "k": k, "prompt_tokens": int(mask.sum()), "prompts_cut": cut,
        "prompt_width": ids.size(1), "answer_tokens": args.max_answer_seq_len,
        "model": {"architecture": "OPTForCausalLM", "hidden": args.hidden, "layers": args.layers,
                  "parameters": sum(p.numel() for p in model.parameters()), "vocab": vocab},
        "generated_tokens_per_s": {name: new_tokens / s for name, s in generation.items()},
        "training_pass_s": training,
        "prefill_speedup_vs_plain": generation["plain"] / generation["prefill_once"],
        "prefill_speedup_vs_bare_generate": generation["bare_generate"] / generation["prefill_once"],
        "shared_rows_speedup": training["one_row_per_answer"] / training["one_row_per_prompt"],
        "machine": {"processor": platform.processor() or platform.machine(), "threads": args.threads},
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.prompts} HH prompts ({result['prompt_tokens']} tokens, width {ids.size(1)}), K = {k}, "
          f"{args.max_answer_seq_len} new tokens each; OPT-shaped {args.layers} x {args.hidden}")
    for name, rate in result["generated_tokens_per_s"].items():
        print(f"  generate, {name}: {rate:.0f} tokens/s")
    for name, seconds in training.items():
        print(f"  training pass, {name}: {seconds:.3f} s")
    print(f"prefill once: {result['prefill_speedup_vs_plain']:.2f}x the plain path, "
          f"{result['prefill_speedup_vs_bare_generate']:.2f}x bare generate; one row per prompt: "
          f"{result['shared_rows_speedup']:.2f}x one row per answer")


if __name__ == "__main__":
    main()
