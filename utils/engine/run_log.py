"""Metrics to a JSONL file, TensorBoard and the console, written by rank 0 only."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from utils.distributed import is_main
from utils.run_files import METRICS


class RunLog:
    def __init__(self, output_dir: str | Path, tensorboard_dir: str | Path | None = None,
                 resumed_at: int | None = None) -> None:
        """A new run starts a new log; a resumed one keeps the lines up to its checkpoint's step, as the steps
        after it are run again."""
        self.enabled = is_main()
        self.path = Path(output_dir) / METRICS
        self.board = None
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            kept = []
            if resumed_at is not None and self.path.exists():
                kept = [line for line in self.path.read_text().splitlines(keepends=True)
                        if json.loads(line)["step"] <= resumed_at]
            self.path.write_text("".join(kept))
            if tensorboard_dir is not None:
                from torch.utils.tensorboard import SummaryWriter

                self.board = SummaryWriter(str(tensorboard_dir))

    def record(self, split: str, step: int, metrics: dict[str, Any]) -> None:
        """Append one line per evaluation or training step; TensorBoard gets the numbers."""
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps({"split": split, "step": step, "time": time.time(), **metrics}) + "\n")
        if self.board is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    self.board.add_scalar(f"{split}/{key}", value, step)
            self.board.flush()

    def info(self, message: str) -> None:
        if self.enabled:
            tqdm.write(message)

    def close(self) -> None:
        if self.board is not None:
            self.board.close()
