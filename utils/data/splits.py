"""Which rows a step trains and evaluates on: split selection, DeepSpeed-Chat's --data_split, held-out eval, blending."""
from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass, field

from utils.data.columns import align_columns, settle_columns
from utils.data.sources import FIELDS, PROMPT_FIELDS, Row, RowChecker, Splits, read_source
from utils.errors import UserError

EVAL_SPLITS = ("test", "validation")  # a source's own eval split, in this order of preference


@dataclass(frozen=True)
class DataSpec:
    """Everything that decides a step's rows (and so part of the tokenized-data cache key)."""

    data_path: list[str]
    eval_data_path: list[str] | None = None
    step_only_data_path: list[str] = field(default_factory=list)  # --sft_only_data_path, --prompt_data_path
    data_split: str = "2,4,4"
    phase: int = 1
    eval_fraction: float = 0.1
    seed: int = 1234
    fields: tuple[str, ...] = FIELDS
    train_split: str = "train"
    eval_split: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    on_bad_row: str = "error"
    answer_lists: tuple[str, ...] = ()  # fields that may hold several answers (RowChecker.answer_lists)

    @classmethod
    def from_args(cls, args: argparse.Namespace, phase: int, fields: tuple[str, ...]) -> DataSpec:
        only = getattr(args, "sft_only_data_path", None) or getattr(args, "prompt_data_path", [])
        return cls(data_path=args.data_path, eval_data_path=args.eval_data_path, step_only_data_path=only,
                   data_split=args.data_split, phase=phase, eval_fraction=args.eval_fraction, seed=args.seed, fields=fields, train_split=args.train_split,
                   eval_split=args.eval_split, columns=column_map(args), on_bad_row=args.on_bad_row)


def column_map(args: argparse.Namespace) -> dict[str, str]:
    """--prompt_column and friends, as our field name -> the source's column name."""
    return {name: getattr(args, f"{name}_column") for name in FIELDS if getattr(args, f"{name}_column")}


@dataclass
class DataReport:
    """What happened to the rows, so that nothing is dropped silently."""

    rows_read: dict[str, dict[str, int]] = field(default_factory=dict)
    data_split: str = ""
    phase: int = 0
    # source -> the train rows this step keeps, of how many, and the eval rows it gives (and from where)
    split_shares: dict[str, dict[str, int | str]] = field(default_factory=dict)
    bad_rows_skipped: int = 0
    bad_row_kinds: dict[str, int] = field(default_factory=dict)
    bad_row_examples: list[str] = field(default_factory=list)
    ties_skipped: int = 0
    identical_pairs_skipped: int = 0
    eval_rows_also_in_train: int = 0
    # source -> the columns its prompt rows carry beside the prompt, each with how many rows lack it (None there)
    extra_columns: dict[str, dict[str, int]] = field(default_factory=dict)
    # source -> the columns left out of its prompt rows, each with the type of a value JSON cannot hold
    unkept_columns: dict[str, dict[str, str]] = field(default_factory=dict)
    eval_prompts_in_train_skipped: int = 0
    train_rows: int = 0
    eval_rows: int = 0

    def take_bad_rows(self, checker: RowChecker) -> None:
        self.bad_rows_skipped, self.bad_row_examples = checker.skipped, checker.examples
        self.bad_row_kinds = dict(sorted(checker.kinds.items()))

    def skip_lines(self) -> list[str]:
        """One line per kind of skip; nothing when no row was skipped."""
        out = []
        if self.bad_rows_skipped:
            kinds = ", ".join(f"{n} {kind}" for kind, n in self.bad_row_kinds.items())
            out.append(f"skipped {self.bad_rows_skipped} bad rows (--on_bad_row skip): {kinds}; e.g. "
                       + "; ".join(self.bad_row_examples[:2]))
        if self.ties_skipped:
            out.append(f"skipped {self.ties_skipped} ties (equal scores: not a preference)")
        if self.identical_pairs_skipped:
            out.append(f"skipped {self.identical_pairs_skipped} pairs whose chosen and rejected are identical")
        if self.eval_prompts_in_train_skipped:
            out.append(f"skipped {self.eval_prompts_in_train_skipped} held-out prompts that this step trains on: they "
                       "would measure memory, not generalisation")
        return out

    def sources_line(self) -> str:
        """Every source in one line: the rows it gives and what it feeds, train (this step's share) or eval."""
        parts = []
        for name, share in self.split_shares.items():
            read = ", ".join(f"{split} {n}" for split, n in self.rows_read[name].items())
            if name in self.extra_columns:
                read += "; columns: " + ", ".join(column + (f" (None in {n} row{'s' * (n > 1)})" if n else "")
                                                  for column, n in self.extra_columns[name].items())
            feeds = []
            if share["of"]:
                feeds.append(f"train {share['kept']}" + (" (all)" if share["kept"] == share["of"] else
                             f" (--data_split {self.data_split}: step {self.phase + 1}'s share of {share['of']})"))
            if share["eval"]:
                feeds.append(f"eval {share['eval']} ({share['eval_from']})")
            parts.append(f"{name} [{read}] -> {', '.join(feeds) or 'nothing'}")
        return "data: " + "; ".join(parts)

    def lines(self) -> list[str]:
        out = [self.sources_line()]
        everything = ",".join("1" if i == self.phase else "0" for i in range(3))
        out += [f"{name}: --data_split {self.data_split} leaves step {self.phase + 1} {share['kept']} of its "
                f"{share['of']} train rows; --data_split {everything} uses them all"
                for name, share in self.split_shares.items() if share["kept"] < share["of"]]
        out += [f"{name}: column(s) {', '.join(f'{c} ({kind})' for c, kind in unkept.items())} left out of its "
                "prompt rows: reward functions and samples.jsonl take values that JSON can write"
                for name, unkept in self.unkept_columns.items()]
        out += self.skip_lines()
        if self.eval_rows_also_in_train:
            out.append(f"note: {self.eval_rows_also_in_train} eval rows also occur, word for word, in train rows "
                       "(duplicates in the source)")
        out.append(f"train rows: {self.train_rows}, eval rows: {self.eval_rows}")
        return out


def _select(splits: Splits, split_spec: str, source: str) -> tuple[list[Row], set[tuple[str, int]]]:
    """Rows of a Hugging Face split string such as 'train+test[:6275]', and which (split, index) they are."""
    from datasets import ReadInstruction

    try:
        parts = ReadInstruction.from_spec(split_spec).to_absolute({k: len(v) for k, v in splits.items()})
    except (ValueError, AssertionError) as err:
        raise UserError(f"{source}: split '{split_spec}': {err} (it has {', '.join(splits)})") from None
    rows: list[Row] = []
    taken: set[tuple[str, int]] = set()
    for part in parts:
        rows += splits[part.splitname][part.from_:part.to]
        taken |= {(part.splitname, i) for i in range(part.from_, max(part.from_, part.to))}
    return rows, taken


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


def _train_and_eval(splits: Splits, spec: DataSpec, source: str, with_eval: bool
                    ) -> tuple[list[Row], list[Row], str]:
    """A source's train rows and, when it supplies the eval set, its eval rows, which never overlap them, and where
    those come from."""
    rows, taken = _select(splits, spec.train_split, source)
    if not with_eval:
        return rows, [], ""
    trained = {split for split, _ in taken}
    eval_split = spec.eval_split or next((s for s in EVAL_SPLITS if s in splits and s not in trained), None)
    if eval_split is None:
        return *_hold_out(rows, spec.eval_fraction, spec.seed), f"--eval_fraction {spec.eval_fraction:g} held out"
    evals, eval_taken = _select(splits, eval_split, source)
    if taken & eval_taken:
        raise UserError(f"{source}: --train_split {spec.train_split} and --eval_split {eval_split} share "
                        f"{len(taken & eval_taken)} rows; eval rows must not be trained on")
    return rows, evals, f"split {eval_split}"


def _drop_identical(rows: list[Row], report: DataReport) -> list[Row]:
    kept = [r for r in rows if "rejected" not in r or r["chosen"] != r["rejected"]]
    report.identical_pairs_skipped += len(rows) - len(kept)
    return kept


def _read(name: str, label: str, spec: DataSpec, checker: RowChecker, report: DataReport) -> Splits:
    """A source's rows, counted in the report under `label`; prompt rows with their extra columns as JSON values."""
    splits, ties = read_source(name, spec.fields, checker)
    report.rows_read[label] = {split: len(rows) for split, rows in splits.items()}
    report.ties_skipped += ties
    if spec.fields == PROMPT_FIELDS:
        columns, unkept = settle_columns([row for rows in splits.values() for row in rows])
        if columns:
            report.extra_columns[label] = columns
        if unkept:
            report.unkept_columns[label] = unkept
    return splits


def _eval_source(name: str, spec: DataSpec, checker: RowChecker, report: DataReport) -> list[Row]:
    """An eval-only source's rows: --eval_split, else its test or validation split, else all of its rows."""
    splits = _read(name, f"{name} (eval)", spec, checker, report)
    chosen = spec.eval_split or next((s for s in EVAL_SPLITS if s in splits), "train")
    rows = _select(splits, chosen, name)[0]
    report.split_shares[f"{name} (eval)"] = {"kept": 0, "of": 0, "eval": len(rows), "eval_from": f"split {chosen}"}
    return rows


def load_eval_rows(spec: DataSpec) -> tuple[list[Row], DataReport]:
    """Rows to evaluate a trained model on (rw_eval.py): each of spec.data_path read as an eval source."""
    report = DataReport()
    checker = RowChecker(spec.on_bad_row, spec.columns, spec.answer_lists)
    rows = _drop_identical([r for name in spec.data_path for r in _eval_source(name, spec, checker, report)], report)
    report.take_bad_rows(checker)
    if not rows:
        raise UserError(f"no pairs to evaluate in {' '.join(spec.data_path)}")
    report.eval_rows = len(rows)
    return rows, report


def load_rows(spec: DataSpec) -> tuple[list[Row], list[Row], DataReport]:
    """Train and eval rows for one step, blended across sources with a seeded shuffle.

    --data_path sources give this step its --data_split share; --sft_only_data_path (step 1) and --prompt_data_path
    (step 3) sources give all their train rows. Without --eval_data_path, each source's eval split, or a seeded --eval_fraction of its train
    rows, is the eval set. Prompt rows (fields PROMPT_FIELDS) all carry the same extra columns, None where their
    source lacks one, so that a reward function gets one aligned list per column.
    """
    report = DataReport(data_split=spec.data_split, phase=spec.phase)
    checker = RowChecker(spec.on_bad_row, spec.columns)
    train: list[Row] = []
    evals: list[Row] = []
    sources = [(name, True) for name in spec.data_path] + [(name, False) for name in spec.step_only_data_path]
    for name, by_phase in sources:
        splits = _read(name, name, spec, checker, report)
        rows, held, held_from = _train_and_eval(splits, spec, name, with_eval=spec.eval_data_path is None)
        share = _phase_share(rows, spec.data_split, spec.phase, spec.seed) if by_phase else rows
        report.split_shares[name] = {"kept": len(share), "of": len(rows), "eval": len(held),
                                     "eval_from": held_from}
        train += share
        evals += held
    for name in spec.eval_data_path or []:
        evals += _eval_source(name, spec, checker, report)
    report.take_bad_rows(checker)
    train, evals = _drop_identical(train, report), _drop_identical(evals, report)
    if not train:
        raise UserError(f"no training rows left from {' '.join(spec.data_path + list(spec.step_only_data_path))} "
                        f"(data_split {spec.data_split}, {report.identical_pairs_skipped} identical pairs skipped, "
                        f"{report.bad_rows_skipped} bad rows skipped)")
    prompts = spec.fields == PROMPT_FIELDS
    if prompts:
        align_columns(train + evals)

    def key(row: Row) -> str:  # a prompt repeats a train prompt whatever its other columns (an id, say) hold
        return json.dumps(row["prompt"] if prompts else row, sort_keys=True)

    train_keys = {key(r) for r in train}
    repeats = [key(r) in train_keys for r in evals]
    if prompts:  # a policy's held-out prompts: one it trains on says nothing of generalisation
        report.eval_prompts_in_train_skipped = sum(repeats)
        evals = [r for r, repeat in zip(evals, repeats) if not repeat]
    else:
        report.eval_rows_also_in_train = sum(repeats)
    if not evals:
        raise UserError(f"no eval rows ({report.eval_prompts_in_train_skipped} held-out prompts skipped as the step "
                        "trains on them): give --eval_data_path or a positive --eval_fraction")
    rng = random.Random(spec.seed)
    rng.shuffle(train)
    rng.shuffle(evals)
    report.train_rows, report.eval_rows = len(train), len(evals)
    return train, evals, report
