"""Step 2: train a reward model on preference pairs; export it as a Hugging Face sequence-classification model."""
from __future__ import annotations

import functools

from utils.data.sources import FIELDS
from utils.data.splits import DataSpec
from utils.errors import exit_on_error
from utils.flags import parse_flags
from utils.run_files import exit_if_finished


@exit_on_error
def main() -> None:
    args, warnings = parse_flags(2)  # before torch, deepspeed and transformers load: their mistakes answer at once
    exit_if_finished(args)  # a launcher's rerun skips a finished step at once
    from utils.data.encoding import encode_pairs
    from utils.engine.loop import build_engine, eval_loader, optimizer_steps, train, train_loader
    from utils.engine.run import start_run
    from utils.models.loading import load_reward_model, load_tokenizer, resolve_num_padding
    from utils.models.lora import add_lora
    from utils.models.reward_model import RewardModel
    from utils.models.shared_prompt import pair_row_length
    from utils.objectives.reward import RewardObjective, pair_collate

    run = start_run(args)
    for line in warnings:
        run.log.info(line)

    # Texts end with the EOS id, except a chat template's, which end with its own end-of-turn.
    tokenizer = load_tokenizer(args.model_name_or_path, args.score_token, append_eos=args.template != "chat",
                               eot_token=args.eot_token if args.add_eot_token else None,
                               trust_remote_code=args.trust_remote_code)
    num_padding = resolve_num_padding(tokenizer, args.num_padding_at_beginning, args.score_token,
                                      args.model_name_or_path, args.template)
    encode = functools.partial(encode_pairs, tokenizer=tokenizer, template=args.template,
                               max_seq_len=args.max_seq_len, overlength=args.overlength)
    train_pairs, eval_pairs, _ = run.encoded_data(
        DataSpec.from_args(args, phase=1, fields=FIELDS), tokenizer, lambda rows, split: encode(rows), "step2-pairs",
        template=args.template, max_seq_len=args.max_seq_len, overlength=args.overlength)

    collate, layout = pair_collate(args, tokenizer.pad_token_id)
    run.log.info(f"batches: {layout}")
    lengths = None if args.length_grouping == "off" else [pair_row_length(p) for p in train_pairs]
    loader = train_loader(train_pairs, args.per_device_train_batch_size, collate, args.seed, lengths)
    model = add_lora(load_reward_model(args.model_name_or_path, tokenizer, args.dropout,
                                       args.gradient_checkpointing, args.trust_remote_code), args)
    engine = build_engine(RewardModel(model), args, run.ds_config, optimizer_steps(loader, args))

    objective = RewardObjective(score_token=args.score_token, pad_id=tokenizer.pad_token_id,
                                num_padding_at_beginning=num_padding, loss=args.loss,
                                center_rewards_coefficient=args.center_rewards_coefficient,
                                compute_fp32_loss=args.compute_fp32_loss)
    evals = eval_loader(eval_pairs, args.per_device_eval_batch_size, collate)
    final = train(engine, loader, args, objective, lambda: objective.evaluate(engine, evals, args.eval_iters),
                  run.log, run.resume)
    run.finish(model, tokenizer, final, num_padding_at_beginning=num_padding)
    run.log.info(f"reward model exported to {args.output_dir}")
    run.log.info(f"accuracy={final['accuracy']:.4f}")


if __name__ == "__main__":
    main()
