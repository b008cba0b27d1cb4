"""Step 2: train a reward model on preference pairs; export it as a Hugging Face sequence-classification model."""
from __future__ import annotations

import functools

from transformers import set_seed

from utils import distributed as dist
from utils.data import load_pairs
from utils.ds_config import deepspeed_config, resolve_dtype
from utils.encoding import collate_pairs, encode_pairs
from utils.engine import build_engine, eval_loader, on_gpu, optimizer_steps, train, train_loader, zero3_loading
from utils.errors import UserError, exit_on_user_error
from utils.export import export_model
from utils.flags import reward_parser
from utils.model import load_reward_model, load_tokenizer, resolve_num_padding
from utils.reward_model import RewardModel
from utils.reward_training import RewardObjective
from utils.run_log import RunLog


@exit_on_user_error
def main() -> None:
    args = reward_parser().parse_args()
    dtype = resolve_dtype(args.dtype, on_gpu())
    dist.init_distributed()
    ds_config = deepspeed_config(args, dist.world_size(), dtype)
    set_seed(args.seed)
    log = RunLog(args.output_dir, args.tensorboard_path if args.enable_tensorboard else None)

    tokenizer = load_tokenizer(args.model_name_or_path, args.score_token, append_eos=True)
    num_padding = resolve_num_padding(tokenizer, args.num_padding_at_beginning, args.score_token,
                                      args.model_name_or_path)
    train_rows, eval_rows, report = load_pairs(args.data_path, args.eval_data_path, args.data_split, 1,
                                               args.eval_fraction, args.seed)
    train_pairs, train_report = encode_pairs(train_rows, tokenizer, args.template, args.max_seq_len, args.overlength)
    eval_pairs, eval_report = encode_pairs(eval_rows, tokenizer, args.template, args.max_seq_len, args.overlength)
    for line in report.lines() + train_report.lines("train") + eval_report.lines("eval"):
        log.info(line)
    if not train_pairs or not eval_pairs:
        raise UserError(f"no pairs fit --max_seq_len {args.max_seq_len} (train {len(train_pairs)}, "
                        f"eval {len(eval_pairs)}); raise it or use --overlength truncate")

    collate = functools.partial(collate_pairs, pad_id=tokenizer.pad_token_id)
    loader = train_loader(train_pairs, args.per_device_train_batch_size, collate, args.seed)
    zero3_config = zero3_loading(ds_config)  # lets from_pretrained load ZeRO-3 partitions; alive until export
    model = load_reward_model(args.model_name_or_path, tokenizer, args.dropout, args.gradient_checkpointing)
    engine = build_engine(RewardModel(model), args, ds_config, optimizer_steps(loader, args))

    objective = RewardObjective(args.score_token, tokenizer.pad_token_id, num_padding, args.loss,
                                args.center_rewards_coefficient, args.compute_fp32_loss)
    evals = eval_loader(eval_pairs, args.per_device_eval_batch_size, collate)
    final = train(engine, loader, args, objective, lambda: objective.evaluate(engine, evals, args.eval_iters), log)

    export_model(model, tokenizer, args.output_dir, args.zero_stage,
                 extra_files={"eval_results.json": final,
                              "training_args.json": vars(args) | {"num_padding_at_beginning": num_padding}})
    del zero3_config
    log.close()
    dist.shutdown()
    log.info(f"reward model exported to {args.output_dir}")
    log.info(f"accuracy={final['accuracy']:.4f}")


if __name__ == "__main__":
    main()
