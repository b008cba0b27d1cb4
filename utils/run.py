"""What every step does around its own work: start the processes, configure DeepSpeed, log the data, export."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed

from utils import distributed as dist
from utils.data import DataReport
from utils.ds_config import deepspeed_config, resolve_dtype
from utils.encoding import EncodeReport
from utils.engine import on_gpu, zero3_loading
from utils.errors import UserError
from utils.export import export_model
from utils.run_log import RunLog


@dataclass
class Run:
    args: argparse.Namespace
    ds_config: dict[str, Any]
    log: RunLog
    zero3: object | None  # lets from_pretrained load ZeRO-3 partitions; must stay alive until the export

    def report_data(self, report: DataReport, train: EncodeReport, evals: EncodeReport) -> None:
        """Log what was read, cut and skipped; stop if nothing is left to train or evaluate on."""
        for line in report.lines() + train.lines("train") + evals.lines("eval"):
            self.log.info(line)
        if not train.kept or not evals.kept:
            raise UserError(f"no {train.unit} fit --max_seq_len {self.args.max_seq_len} (train {train.kept}, "
                            f"eval {evals.kept}); raise it or use --overlength truncate")

    def finish(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, final: dict[str, float],
               **resolved: Any) -> None:
        """Export the model with its final evaluation and flags (plus values resolved at run time), then stop."""
        export_model(model, tokenizer, self.args.output_dir, self.args.zero_stage,
                     extra_files={"eval_results.json": final, "training_args.json": vars(self.args) | resolved})
        self.zero3 = None
        self.log.close()
        dist.shutdown()


def start_run(args: argparse.Namespace) -> Run:
    """Check the precision, join the process group, build the DeepSpeed config, seed, and open the log."""
    dtype = resolve_dtype(args.dtype, on_gpu())
    dist.init_distributed()
    ds_config = deepspeed_config(args, dist.world_size(), dtype)
    set_seed(args.seed)
    log = RunLog(args.output_dir, args.tensorboard_path if args.enable_tensorboard else None)
    return Run(args, ds_config, log, zero3_loading(ds_config))
