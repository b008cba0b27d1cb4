"""Reading preference pairs from their sources, checking them, and splitting them into train and eval rows."""
from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from utils.errors import UserError
from utils.synthetic import generate_pairs

FIELDS = ("prompt", "chosen", "rejected")
SFT_FIELDS = ("prompt", "chosen")  # step 1 trains on the prompt and the chosen answer; a rejected field is ignored
SYNTHETIC_DEFAULT_SIZE = 4000
SOURCES_HELP = (
    "Preference sources: 'synthetic' (built-in seeded pairs; 'synthetic:N' for N train pairs, plus a held-out tenth) "
    "local .jsonl/.json files (optionally .gz), or a folder of data files or a Hugging Face dataset, with prompt, "
    "chosen and rejected fields. Several are concatenated. Default: synthetic")

Row = dict[str, str]


@dataclass
class DataReport:
    """What happened to the rows, so that nothing is dropped silently."""

    rows_read: dict[str, int] = field(default_factory=dict)
    identical_pairs_skipped: int = 0
    train_rows: int = 0
    eval_rows: int = 0

    def lines(self) -> list[str]:
        out = [f"read {n} rows from {name}" for name, n in self.rows_read.items()]
        if self.identical_pairs_skipped:
            out.append(f"skipped {self.identical_pairs_skipped} pairs whose chosen and rejected are identical")
        out.append(f"train rows: {self.train_rows}, eval rows: {self.eval_rows}")
        return out


def _check_row(obj: object, where: str, fields: tuple[str, ...]) -> Row:
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object with fields {', '.join(fields)}")
    for name in fields:
        if name not in obj:
            raise UserError(f"{where}: field '{name}' is missing")
        value = obj[name]
        if not isinstance(value, str):
            raise UserError(f"{where}: field '{name}' must be a string, got {type(value).__name__}")
        if not value.strip():
            raise UserError(f"{where}: field '{name}' is empty")
    return {name: obj[name] for name in fields}


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{where}: not valid UTF-8 ({err.reason} at byte {err.start})") from None


def _read_json_file(path: Path, fields: tuple[str, ...]) -> list[Row]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw_lines = handle.read().splitlines()
    first = next((line.strip() for line in raw_lines if line.strip()), b"")
    if ".jsonl" not in path.name and first.startswith(b"["):  # one JSON array, rows named by their index
        try:
            items = json.loads(_decode(b"\n".join(raw_lines), str(path)))
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None
        return [_check_row(item, f"{path}: item {i}", fields) for i, item in enumerate(items)]
    rows = []
    for lineno, raw in enumerate(raw_lines, start=1):
        where = f"{path}:{lineno}"
        text = _decode(raw, where).strip()
        if not text:
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{where}: invalid JSON: {err.msg} (column {err.colno})") from None
        rows.append(_check_row(obj, where, fields))
    return rows


def read_source(spec: str, fields: tuple[str, ...] = FIELDS) -> tuple[list[Row], list[Row] | None]:
    """A source's train rows and its own test rows (None when it has no test split), each with `fields`."""
    if spec == "synthetic" or spec.startswith("synthetic:"):
        size = SYNTHETIC_DEFAULT_SIZE
        if ":" in spec:
            try:
                size = int(spec.split(":", 1)[1])
            except ValueError:
                raise UserError(f"--data_path {spec}: expected synthetic:N with N a number of pairs") from None
        rows = [{k: row[k] for k in fields} for row in generate_pairs(size + max(1, size // 10), seed=0)]
        train = rows[:size]
        seen = {tuple(r.values()) for r in train}
        return train, [r for r in rows[size:] if tuple(r.values()) not in seen]
    path = Path(spec)
    if path.name.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz")):
        if not path.is_file():
            raise UserError(f"data file not found: {path}")
        return _read_json_file(path, fields), None
    if path.is_file():
        raise UserError(f"unsupported data file '{spec}': use a .jsonl or .json file (optionally .gz)")
    return _read_dataset(spec, fields)


def _read_dataset(name: str, fields: tuple[str, ...]) -> tuple[list[Row], list[Row] | None]:
    """A local folder of data files or a hub dataset with the `fields` columns, via `datasets`."""
    import datasets

    try:
        splits = datasets.load_dataset(name)
    except Exception as err:  # datasets raises many types here: missing, offline, unreadable
        raise UserError(f"cannot load dataset '{name}': {err}") from None
    if "train" not in splits:
        raise UserError(f"dataset '{name}' has no train split (it has {', '.join(splits)})")
    out = []
    for split in ("train", "test"):
        if split not in splits:
            out.append(None)
            continue
        missing = [f for f in fields if f not in splits[split].column_names]
        if missing:
            raise UserError(f"dataset '{name}' [{split}] lacks column(s) {', '.join(missing)}; it has "
                            f"{', '.join(splits[split].column_names)}")
        rows = splits[split].select_columns(list(fields)).to_list()
        out.append([_check_row(row, f"{name} [{split}] row {i}", fields) for i, row in enumerate(rows)])
    return out[0], out[1]


def _phase_share(rows: list[Row], data_split: str, phase: int, seed: int) -> list[Row]:
    """DeepSpeed-Chat's --data_split: a seeded shuffle cut into per-step shares; this step takes share `phase`."""
    try:
        weights = [float(w) for w in data_split.split(",")]
    except ValueError:
        raise UserError(f"--data_split {data_split}: expected comma-separated numbers such as 2,4,4") from None
    if len(weights) != 3 or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise UserError(f"--data_split {data_split}: expected three non-negative numbers with a positive sum")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    cum = [sum(weights[:i]) / sum(weights) for i in range(4)]
    start, end = (round(len(rows) * c) for c in cum[phase:phase + 2])
    return [rows[i] for i in sorted(order[start:end])]


def _hold_out(rows: list[Row], fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:max(1, round(len(rows) * fraction))] if rows and fraction > 0 else [])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def _drop_identical(rows: list[Row], report: DataReport) -> list[Row]:
    kept = [r for r in rows if r["chosen"] != r.get("rejected")]
    report.identical_pairs_skipped += len(rows) - len(kept)
    return kept


def load_rows(data_path: list[str], eval_data_path: list[str] | None, data_split: str, phase: int,
              eval_fraction: float, seed: int, fields: tuple[str, ...] = FIELDS,
              sft_only_data_path: list[str] = ()) -> tuple[list[Row], list[Row], DataReport]:
    """Train and eval rows for one step, with eval never drawn from the train rows.

    --data_path sources give this step its --data_split share; --sft_only_data_path sources (step 1) give all
    their train rows. Either kind without a test split has a seeded --eval_fraction held out for eval.
    """
    report = DataReport()
    train: list[Row] = []
    evals: list[Row] = []
    sources = [(spec, True) for spec in data_path] + [(spec, False) for spec in sft_only_data_path]
    for spec, split_by_phase in sources:
        rows, test = read_source(spec, fields)
        report.rows_read[spec] = len(rows) + len(test or [])
        if eval_data_path is None and test is None:
            rows, test = _hold_out(rows, eval_fraction, seed)
        train += _phase_share(rows, data_split, phase, seed) if split_by_phase else rows
        if eval_data_path is None:
            evals += test
    for spec in eval_data_path or []:
        rows, test = read_source(spec, fields)
        report.rows_read[f"{spec} (eval)"] = len(test if test is not None else rows)
        evals += test if test is not None else rows
    train, evals = _drop_identical(train, report), _drop_identical(evals, report)
    if not train:
        raise UserError(f"no training rows left from {' '.join(data_path + list(sft_only_data_path))} "
                        f"(data_split {data_split}, {report.identical_pairs_skipped} identical pairs skipped)")
    if not evals:
        raise UserError("no eval rows: give --eval_data_path or a positive --eval_fraction")
    report.train_rows, report.eval_rows = len(train), len(evals)
    return train, evals, report
