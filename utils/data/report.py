"""The data report: what was read, skipped, cut and kept, as data_report.json and a short table."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from utils.data.encoding import EncodeReport
from utils.data.splits import DataReport


def build_report(data: DataReport, train: EncodeReport, evals: EncodeReport, cache: str) -> dict[str, Any]:
    return {**asdict(data), "train": asdict(train), "eval": asdict(evals), "cache": cache}


def table(report: dict[str, Any]) -> list[str]:
    """A few aligned lines; the length-bias baseline sits beside the counts so that it is quoted with accuracy."""
    unit = report["train"]["unit"]
    lines = [f"{'split':<6}{unit:>8}{'truncated':>11}{'dropped':>9}   tokens p50/p90/p99/max (uncut)"
             + ("   longer answer wins" if unit == "pairs" else "")]
    for split in ("train", "eval"):
        part = report[split]
        tokens = "/".join(str(part["tokens"].get(k, "-")) for k in ("p50", "p90", "p99", "max"))
        wins = f"   {part['longer_wins']:.3f}" if part["longer_wins"] is not None else ""
        lines.append(f"{split:<6}{part['kept']:>8}{part['truncated']:>11}{part['dropped']:>9}   {tokens:<31}{wins}")
    return lines


def write_report(report: dict[str, Any], output_dir: str | Path) -> Path:
    path = Path(output_dir) / "data_report.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
