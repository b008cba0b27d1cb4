"""Step 1: supervised fine-tuning on prompts and chosen answers; export it as a Hugging Face causal LM."""
from __future__ import annotations

import functools

from utils.data.sources import SFT_FIELDS, Row
from utils.data.splits import DataSpec
from utils.errors import exit_on_error
from utils.flags import parse_flags
from utils.run_files import exit_if_finished


@exit_on_error
def main() -> None:
    args, warnings = parse_flags(1)  # before torch, deepspeed and transformers load: their mistakes answer at once
    exit_if_finished(args)  # a launcher's rerun skips a finished step at once
    from utils.data.encoding import EncodeReport, collate_segments, collate_sft, encode_sft, pack_blocks, pack_segments
    from utils.engine.loop import build_engine, eval_loader, optimizer_steps, train, train_loader
    from utils.engine.run import start_run
    from utils.models.loading import load_causal_lm, load_tokenizer
    from utils.models.lora import add_lora
    from utils.objectives.sft import SFTObjective

    run = start_run(args)
    for line in warnings:
        run.log.info(line)

    # No EOS appended by the tokenizer: a prompt given to generate() must not end the text. encode_sft adds it.
    tokenizer = load_tokenizer(args.model_name_or_path, "end", append_eos=False,
                               eot_token=args.eot_token if args.add_eot_token else None,
                               trust_remote_code=args.trust_remote_code)

    def encode(rows: list[Row], split: str) -> tuple[list[dict[str, list[int]]], EncodeReport]:
        whole = args.packing == "concat" and split == "train"  # these texts span blocks; eval is never packed
        return encode_sft(rows, tokenizer, args.template, None if whole else args.max_seq_len, args.overlength,
                          args.train_on_prompt)

    train_texts, eval_texts, train_report = run.encoded_data(
        DataSpec.from_args(args, phase=0, fields=SFT_FIELDS), tokenizer, encode, "step1-sft", template=args.template,
        max_seq_len=args.max_seq_len, overlength=args.overlength, packing=args.packing,
        train_on_prompt=args.train_on_prompt)
    collate = functools.partial(collate_sft, pad_id=tokenizer.pad_token_id,
                                width=args.max_seq_len if args.pad_to_max_len else None)
    train_collate = collate
    if args.packing:
        pack = pack_blocks if args.packing == "concat" else pack_segments
        train_texts = pack(train_texts, args.max_seq_len)
        run.log.info(f"packed {train_report.kept} training texts into {len(train_texts)} rows of up to "
                     f"{args.max_seq_len} tokens ({args.packing})")
        if args.packing == "segments":
            train_collate = functools.partial(collate_segments, pad_id=tokenizer.pad_token_id)
    lengths = None if args.length_grouping == "off" else [len(text["input_ids"]) for text in train_texts]
    loader = train_loader(train_texts, args.per_device_train_batch_size, train_collate, args.seed, lengths)
    model = add_lora(load_causal_lm(args.model_name_or_path, tokenizer, args.dropout, args.gradient_checkpointing,
                                    args.trust_remote_code), args)
    engine = build_engine(model, args, run.ds_config, optimizer_steps(loader, args))

    objective = SFTObjective(args.compute_fp32_loss)
    evals = eval_loader(eval_texts, args.per_device_eval_batch_size, collate)
    final = train(engine, loader, args, objective, lambda: objective.evaluate(engine, evals, args.eval_iters),
                  run.log, run.resume)
    run.finish(model, tokenizer, final)
    run.log.info(f"causal LM exported to {args.output_dir}")
    run.log.info(f"perplexity={final['perplexity']:.4f}")


if __name__ == "__main__":
    main()
