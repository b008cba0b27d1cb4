"""One trainer in its own process, so that each peak RSS is its own: `ours` runs one of our entrypoints unchanged,
`trl` runs trl.RewardTrainer, `trl_rloo` trl.RLOOTrainer, `trl_grpo` trl.GRPOTrainer, `trl_dpo` trl.DPOTrainer.
Each writes a JSON result (peak RSS, torch threads, and pad counts or TRL's timing).

Usage: python benchmarks/bench_child.py ours RESULT.json PAD_ID|none -- main.py ARGS...
       python benchmarks/bench_child.py trl|trl_rloo|trl_grpo|trl_dpo RESULT.json SPEC.json
"""
from __future__ import annotations

import json
import resource
import runpy
import sys
from pathlib import Path

import torch
from bench_counts import PadCounter


def run_ours(pad_id: int | None, argv: list[str]) -> dict[str, object]:
    """Our entrypoint as `python main.py ARGS`, with only its train loader's collate function wrapped by a counter
    (unless pad_id is None: step 3's batches are prompt indices): a cross-check of the trainer's own token counts,
    and the pad fraction where it does not log them."""
    from utils.engine import loop

    counters: list[PadCounter] = []
    original = loop.train_loader

    def counted_loader(dataset, batch_size, collate, *args, **kwargs):
        counters.append(PadCounter(collate, pad_id))
        return original(dataset, batch_size, counters[-1], *args, **kwargs)

    if pad_id is not None:
        loop.train_loader = counted_loader
    sys.argv = argv
    runpy.run_path(argv[0], run_name="__main__")
    return {"collate_counts": counters[0].counts() if counters else None,
            "pair_order": counters[0].order if counters else None}


def main() -> None:
    mode, result_path = sys.argv[1], Path(sys.argv[2])
    if mode == "ours":
        pad_id = None if sys.argv[3] == "none" else int(sys.argv[3])
        result = run_ours(pad_id, sys.argv[sys.argv.index("--") + 1:])
    elif mode == "trl_dpo":
        from bench_trl_dpo import run_trl_dpo

        result = run_trl_dpo(json.loads(Path(sys.argv[3]).read_text()))
    elif mode == "trl_rloo":
        from bench_trl_rloo import run_trl_rloo

        result = run_trl_rloo(json.loads(Path(sys.argv[3]).read_text()))
    elif mode == "trl_grpo":
        from bench_trl_grpo import run_trl_grpo

        result = run_trl_grpo(json.loads(Path(sys.argv[3]).read_text()))
    else:
        from bench_trl import run_trl

        result = run_trl(json.loads(Path(sys.argv[3]).read_text()))
    result |= {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               "torch_threads": torch.get_num_threads()}
    result_path.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
