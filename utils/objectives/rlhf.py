"""Step 3's run, once its flags are checked: the policy, its reference and the reward model loaded, then trained on
preference pairs (DPO) or on the policy's own answers (RLOO, RAFT, PPO, online DPO), and exported as a causal LM."""
from __future__ import annotations

import argparse
import functools
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from utils import distributed as dist
from utils.data.encoding import encode_preferences
from utils.data.sources import FIELDS, PROMPT_FIELDS, Row
from utils.data.splits import DataSpec, load_rows
from utils.data.synthetic import flawed_share
from utils.engine.ds_config import frozen_config
from utils.engine.loop import (
    build_engine,
    eval_loader,
    frozen_model,
    loaded_with,
    optimizer_steps,
    train,
    train_loader,
)
from utils.engine.run import Run, start_run
from utils.engine.throughput import weights_gib
from utils.errors import UserError
from utils.models.dschat_convert import is_dschat_checkpoint
from utils.models.loading import load_causal_lm, load_tokenizer
from utils.models.lora import WithoutAdapters, add_lora
from utils.models.reward_model import load_trained_reward_model
from utils.models.shared_prompt import pair_row_length
from utils.objectives.algorithms import ALGORITHMS, objective_class
from utils.objectives.answer_rewards import AnswerRewards
from utils.objectives.dpo import DPOObjective, collate_preferences
from utils.objectives.dpo_reference import attach, precompute_and_free, saved_reference_log_probs
from utils.objectives.model_checks import check_models
from utils.objectives.policy import PolicyObjective


def _frozen(ds_config: dict, offload: bool | None) -> dict | None:
    """How ZeRO-3 loads a frozen model: partitioned at load (offloaded or not), or whole when offload is None."""
    return None if offload is None else frozen_config(ds_config, offload)


def _indices(items: list[int]) -> dict[str, torch.Tensor]:
    return {"prompt_index": torch.tensor(items)}


def _reward_model(args: argparse.Namespace, run: Run) -> tuple[PreTrainedModel | None, PreTrainedTokenizerBase | None]:
    if not args.reward_model_name_or_path:
        return None, None
    # a DeepSpeed-Chat folder is converted whole in memory; ZeRO-3 partitions it when its engine starts
    partition = None if is_dschat_checkpoint(args.reward_model_name_or_path) else args.offload_reward_model
    with loaded_with(run.zero3, _frozen(run.ds_config, partition)):
        model, tokenizer, _ = load_trained_reward_model(args.reward_model_name_or_path)
    return model, tokenizer


def _rollout_prompts(args: argparse.Namespace, run: Run, kind: type[PolicyObjective]
                     ) -> tuple[list[Row], list[Row], int]:
    """The prompts (held-out ones as many as the evaluation reads), and how many each process samples before
    training on them (a rollout, or an online-DPO iteration). Too few prompts for one is an error."""
    prompts, held_out, report = load_rows(DataSpec.from_args(args, phase=2, fields=PROMPT_FIELDS))
    for line in report.lines():
        run.log.info(line)
    held_out = held_out[:args.eval_iters * args.per_device_eval_batch_size]
    prompts, batch, what = kind.rollout_prompts(args, prompts)
    world = dist.world_size()
    if len(prompts) < batch * world:
        raise UserError(f"{len(prompts)} prompts: fewer than {what} of {batch} per process on {world} process(es)")
    return prompts, held_out, batch


def _reference(args: argparse.Namespace, run: Run, tokenizer: PreTrainedTokenizerBase) -> nn.Module | None:
    """A frozen copy of the starting policy, or None when the actor's own frozen weights are it (LoRA adapters
    only)."""
    if args.lora_dim and args.only_optimize_lora:
        return None
    with loaded_with(run.zero3, _frozen(run.ds_config, args.offload_reference_model)):
        reference = load_causal_lm(args.model_name_or_path, tokenizer, 0.0, False, args.trust_remote_code)
    return reference.requires_grad_(False).eval()


def _ready_reference(reference: nn.Module | None, engine: nn.Module, run: Run, args: argparse.Namespace
                     ) -> nn.Module:
    if reference is None:
        run.log.info("reference: the actor with its LoRA adapters off (--only_optimize_lora), not a second copy")
        return WithoutAdapters(engine.module)
    return frozen_model(reference, run.ds_config, args.offload_reference_model, engine.device)


def _log_weights(run: Run, held: dict[str, nn.Module | None]) -> None:
    run.log.info("weights held by each process: " + ", ".join(f"{name} {weights_gib(one):.3f} GiB"
                                                             for name, one in held.items() if one is not None))


def _train_on_pairs(args: argparse.Namespace, run: Run, tokenizer: PreTrainedTokenizerBase,
                    normalization: dict[str, float] | None) -> dict[str, float]:
    """--algo dpo: step 2's pairs, written and cut as step 2 does, each answer ending in the EOS."""
    encode = functools.partial(encode_preferences, tokenizer=tokenizer, template=args.template,
                               max_seq_len=args.max_seq_len, overlength=args.overlength)
    train_pairs, eval_pairs, _ = run.encoded_data(
        DataSpec.from_args(args, phase=1, fields=FIELDS), tokenizer, lambda rows, split: encode(rows), "dpo-pairs",
        template=args.template, max_seq_len=args.max_seq_len, overlength=args.overlength)
    saved = saved_reference_log_probs(args, train_pairs, eval_pairs, resuming=run.resume is not None) \
        if args.precompute_ref_log_probs else None  # a resume on other data stops here, before any model loads
    held_out = []  # with a reward model, the held-out pairs' prompts are sampled and scored too
    if args.reward_model_name_or_path:
        held_out = load_rows(DataSpec.from_args(args, phase=1, fields=FIELDS))[1]
        held_out = held_out[:args.eval_iters * args.per_device_eval_batch_size]
    reward_model, reward_tokenizer = _reward_model(args, run)
    reference = None if saved else _reference(args, run, tokenizer)
    model = add_lora(load_causal_lm(args.model_name_or_path, tokenizer, args.dropout, args.gradient_checkpointing,
                                    args.trust_remote_code), args)
    shared = not args.no_shared_prompt
    collate = functools.partial(collate_preferences, pad_id=tokenizer.pad_token_id, shared=shared)
    lengths = None if args.length_grouping == "off" else [pair_row_length(p) for p in train_pairs]
    loader = train_loader(train_pairs, args.per_device_train_batch_size, collate, args.seed, lengths)
    engine = build_engine(model, args, run.ds_config, optimizer_steps(loader, args))
    run.log.info("batches: " + ("one row per pair, shared prompt computed once" if shared
                                else "chosen and rejected as two sequences"))
    if not saved:
        reference = _ready_reference(reference, engine, run, args)
    if args.precompute_ref_log_probs and not saved:
        saved = precompute_and_free(args, reference, (train_pairs, eval_pairs), tokenizer.pad_token_id, run.log.info)
        reference = None
    if saved:
        attach((train_pairs, eval_pairs), saved)
    if reward_model is not None:
        reward_model = frozen_model(reward_model, run.ds_config, args.offload_reward_model, engine.device)
    _log_weights(run, {"policy": engine, "reference": None if isinstance(reference, WithoutAdapters) else reference,
                       "reward model": reward_model})
    objective = DPOObjective(args.beta, args.dpo_loss, args.label_smoothing, reference)
    pairs_eval = eval_loader(eval_pairs, args.per_device_eval_batch_size, collate)
    policy = None if reward_model is None else PolicyObjective(
        args=args, prompts=[], tokenizer=tokenizer, reference=reference,
        rewards=AnswerRewards(args, tokenizer, reward_model, reward_tokenizer), normalization=normalization,
        judge=_judge(args), warn=run.log.info)

    def evaluate() -> dict[str, float]:
        metrics = objective.evaluate(engine, pairs_eval, args.eval_iters)
        if policy is not None:  # generations on held-out prompts, scored by the reward model
            metrics |= policy.evaluate(engine, held_out, engine.global_steps, Path(args.output_dir))
        return metrics

    final = train(engine, loader, args, objective, evaluate, run.log, run.resume)
    run.finish(model, tokenizer, final, algorithm=ALGORITHMS[args.algo].card(args))
    return final


def _judge(args: argparse.Namespace):
    return flawed_share if args.judge == "synthetic" else None


def _train_on_samples(args: argparse.Namespace, run: Run, tokenizer: PreTrainedTokenizerBase,
                      normalization: dict[str, float] | None) -> dict[str, float]:
    """RLOO, RAFT, PPO and online DPO: the policy learns from its own answers, scored by the reward model."""
    kind = objective_class(args.algo)
    prompts, held_out, batch = _rollout_prompts(args, run, kind)
    reward_model, reward_tokenizer = _reward_model(args, run)
    rewards = AnswerRewards.from_flags(args, tokenizer, prompts, reward_model, reward_tokenizer)
    reference = _reference(args, run, tokenizer)
    model = add_lora(load_causal_lm(args.model_name_or_path, tokenizer, args.dropout, args.gradient_checkpointing,
                                    args.trust_remote_code), args)
    loader = train_loader(list(range(len(prompts))), batch, _indices, args.seed)
    steps = optimizer_steps(loader, args, kind.updates_for(args, batch))
    engine = build_engine(model, args, run.ds_config, steps)
    reference = _ready_reference(reference, engine, run, args)
    if reward_model is not None:
        rewards.reward_model = frozen_model(reward_model, run.ds_config, args.offload_reward_model, engine.device)
    if run.zero3 is not None:
        run.log.info("ZeRO-3: the reference and reward model are partitioned across the processes, as the actor is")
    extra = kind.companions_for(args, tokenizer, run.zero3, steps, batch)
    held = {"actor": engine, "reference": None if isinstance(reference, WithoutAdapters) else reference,
            "reward model": rewards.reward_model} | extra
    _log_weights(run, {name: one for name, one in held.items() if isinstance(one, nn.Module)})
    objective = kind(args=args, prompts=prompts, tokenizer=tokenizer, reference=reference, rewards=rewards,
                     normalization=normalization, judge=_judge(args), warn=run.log.info, **extra)
    final = train(engine, loader, args, objective,
                  lambda: objective.evaluate(engine, held_out, engine.global_steps, Path(args.output_dir)),
                  run.log, run.resume)
    run.finish(model, tokenizer, final, algorithm=ALGORITHMS[args.algo].card(args))
    return final


def run_step3(args: argparse.Namespace, warnings: list[str]) -> None:
    """Train and export; `warnings` (from the flags) go to the run's log once it is open."""
    normalization = check_models(args)
    run = start_run(args)
    for line in warnings:
        run.log.info(line)
    tokenizer = load_tokenizer(args.model_name_or_path, "end", append_eos=False,
                               trust_remote_code=args.trust_remote_code)
    learn = {"pairs": _train_on_pairs, "samples": _train_on_samples}[ALGORITHMS[args.algo].learns_from]
    final = learn(args, run, tokenizer, normalization)
    run.log.info(f"policy exported to {args.output_dir}")
    figures = [f"{key}={final[key]:.4f}" for key in ("pair_accuracy", "pair_margin", "reward", "kl_to_reference")
               if key in final]
    if "reward_before" in final:
        figures[figures.index(f"reward={final['reward']:.4f}")] += f" (before {final['reward_before']:.4f})"
    run.log.info(", ".join(figures))
