"""The files a run writes into its output folder, named where no heavy import is needed to read them: the run
summary reads them without torch, and a rerun of a launcher, which passes --resume to every step, skips each finished
step at once instead of importing torch, transformers and DeepSpeed to find out."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

FINISHED = "eval_results.json"  # the final evaluation, written last: its presence marks a completed run
METRICS = "metrics.jsonl"  # one line per evaluation and per training step
EVAL_BEFORE = "eval_before.json"  # step 3's step-0 evaluation, kept so that a resumed run still compares with it


def exit_if_finished(args: argparse.Namespace) -> None:
    """--resume (or --resume_from) on a finished run has nothing to do: say so, on the first process, and exit 0.
    --overwrite_output_dir starts the run again instead."""
    out = Path(args.output_dir)
    if (args.resume or args.resume_from) and not args.overwrite_output_dir and (out / FINISHED).exists():
        if os.environ.get("RANK", "0") == "0":
            print(f"--output_dir {out} holds a finished run ({FINISHED} is there): nothing to resume", flush=True)
        raise SystemExit(0)
