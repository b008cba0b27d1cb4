"""What every step does around its own work: start the processes, configure DeepSpeed, log the data, export."""
from __future__ import annotations

import argparse
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed

from utils import distributed as dist
from utils.data.cache import cached, fingerprint, tokenizer_fingerprint
from utils.data.encoding import ENCODING_VERSION, EncodeReport
from utils.data.report import build_report, table, write_report
from utils.data.sources import Row
from utils.data.splits import DataSpec, load_rows
from utils.engine.checkpoint import CHECKPOINTS, Position, find_checkpoint
from utils.engine.ds_config import deepspeed_config, resolve_dtype
from utils.engine.loop import on_gpu, zero3_loading
from utils.engine.run_log import RunLog
from utils.errors import UserError
from utils.models.export import export_model
from utils.models.model_card import model_card
from utils.run_files import FINISHED

Encoder = Callable[[list[Row], str], tuple[list[dict[str, list[int]]], EncodeReport]]  # (rows, split) -> encoded


@dataclass
class Run:
    args: argparse.Namespace
    ds_config: dict[str, Any]
    log: RunLog
    zero3: object | None  # lets from_pretrained load ZeRO-3 partitions; must stay alive until the export
    resume: tuple[Path, Position] | None = None  # the checkpoint to continue from

    def encoded_data(self, spec: DataSpec, tokenizer: PreTrainedTokenizerBase, encode: Encoder, kind: str,
                     **settings: Any) -> tuple[list[dict[str, list[int]]], list[dict[str, list[int]]], EncodeReport]:
        """This step's train and eval rows as token ids, with the train report.

        The ids are cached under --data_output_path, keyed by the rows themselves (so their sources, split and seed),
        the tokenizer (its EOS rule included), the encoding code's version and `settings`, everything else that
        changes them. The run's
        data_report.json and a table say what was read, skipped, cut and kept; no rows left is an error.
        """
        train_rows, eval_rows, report = load_rows(spec)
        key = {"kind": kind, "encoding_version": ENCODING_VERSION, "tokenizer": tokenizer_fingerprint(tokenizer),
               **settings}
        encoded, reports, hits = {}, {}, []
        for split, rows in (("train", train_rows), ("eval", eval_rows)):
            def build(rows: list[Row] = rows, split: str = split) -> tuple[list, dict[str, Any]]:
                examples, encode_report = encode(rows, split)
                return examples, asdict(encode_report)

            encoded[split], meta, hit = cached(self.args.data_output_path,
                                               key | {"split": split, "rows": fingerprint(rows)}, build)
            reports[split] = EncodeReport(**meta)
            hits.append(hit)
        cache = "hit" if all(hits) else "built"
        self.log.info(f"tokenized data {'loaded from' if cache == 'hit' else 'written to'} the cache in "
                      f"{self.args.data_output_path}")
        summary = build_report(report, reports["train"], reports["eval"], cache)
        for line in report.lines() + reports["train"].lines("train") + reports["eval"].lines("eval") + table(summary):
            self.log.info(line)
        if dist.is_main():
            write_report(summary, self.args.output_dir)
        if not encoded["train"] or not encoded["eval"]:
            raise UserError(f"no {reports['train'].unit} fit --max_seq_len {self.args.max_seq_len} (train "
                            f"{len(encoded['train'])}, eval {len(encoded['eval'])}); raise it or use "
                            "--overlength truncate")
        return encoded["train"], encoded["eval"], reports["train"]

    def finish(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, final: dict[str, float],
               algorithm: str | None = None, **resolved: Any) -> None:
        """Export the model with its final evaluation, flags (plus values resolved at run time) and model card (with
        step 3's algorithm and its settings), then stop."""
        kind = ("reward" if type(model).__name__.endswith("ForSequenceClassification")
                else "rlhf" if algorithm else "sft")
        card = model_card(self.args, final, tokenizer, dist.world_size(), kind, algorithm)
        export_model(model, tokenizer, self.args.output_dir, self.args.zero_stage,
                     extra_files={"eval_results.json": final, "training_args.json": vars(self.args) | resolved,
                                  "README.md": card}, lora=self.args if self.args.lora_dim else None)
        self.zero3 = None
        self.log.close()
        dist.shutdown()


def _check_output_dir(args: argparse.Namespace) -> None:
    """Refuse, before anything is loaded, an output dir that cannot be written or whose run would be lost.

    A finished run (FINISHED is there) or an unfinished one's checkpoints are replaced only on
    --overwrite_output_dir, which retires FINISHED at once: should the new run stop early, --resume then continues
    it instead of taking the folder for the old, finished run. --resume continues an unfinished run; on a finished
    one it stopped before this, in exit_if_finished.
    """
    out = Path(args.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UserError(f"--output_dir {out} is not writable: {err}") from None
    if args.save_interval < 0 or args.save_total_limit < 1:
        raise UserError("--save_interval must be 0 (off) or more, and --save_total_limit at least 1")
    resuming = args.resume or args.resume_from
    if args.overwrite_output_dir:
        if not resuming:
            dist.barrier()  # every rank has looked at the folder before rank 0 clears it
            if dist.is_main():
                shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
                (out / FINISHED).unlink(missing_ok=True)  # the old model stays until the new export replaces it
        return
    if (out / FINISHED).exists():
        raise UserError(f"--output_dir {out} holds a finished run ({FINISHED} is there): pass "
                        "--overwrite_output_dir to replace it, or choose another --output_dir")
    if not resuming and any((out / CHECKPOINTS).glob("step*")):
        raise UserError(f"--output_dir {out} holds the checkpoints of an unfinished run: pass --resume to continue "
                        "it, or --overwrite_output_dir to start over")


def start_run(args: argparse.Namespace) -> Run:
    """Check the configuration, join the process group, build the DeepSpeed config, seed, and open the log."""
    dtype = resolve_dtype(args.dtype, on_gpu())
    dist.init_distributed()
    ds_config = deepspeed_config(args, dist.world_size(), dtype)
    _check_output_dir(args)
    resume = find_checkpoint(args)
    set_seed(args.seed)
    log = RunLog(args.output_dir, args.tensorboard_path if args.enable_tensorboard else None,
                 resumed_at=resume[1].step if resume else None)
    if args.resume and resume is None:
        log.info(f"--resume: no checkpoint in {Path(args.output_dir) / CHECKPOINTS} yet; starting from the beginning")
    return Run(args=args, ds_config=ds_config, log=log, zero3=zero3_loading(ds_config), resume=resume)
