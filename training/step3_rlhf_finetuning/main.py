"""Step 3: improve the step-1 policy with the step-2 reward model, by RLOO, RAFT or PPO; export it as a causal LM."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from utils import distributed as dist
from utils.data.splits import DataSpec, load_rows
from utils.data.synthetic import flawed_share
from utils.engine.ds_config import frozen_config
from utils.engine.loop import build_engine, frozen_model, loaded_with, optimizer_steps, train, train_loader
from utils.engine.run import start_run
from utils.engine.throughput import weights_gib
from utils.errors import UserError, exit_on_error
from utils.flags import step_parser
from utils.models.dschat_convert import is_dschat_checkpoint
from utils.models.loading import load_causal_lm, load_tokenizer
from utils.models.lora import WithoutAdapters, add_lora
from utils.models.reward_model import load_trained_reward_model
from utils.objectives.policy import PolicyObjective
from utils.objectives.policy_checks import check_flags, check_models, flag_warnings
from utils.objectives.ppo import PPOObjective, critic_engine


def _frozen(ds_config: dict, offload: bool | None) -> dict | None:
    """How ZeRO-3 loads a frozen model: partitioned at load (offloaded or not), or whole when offload is None."""
    return None if offload is None else frozen_config(ds_config, offload)


def _indices(items: list[int]) -> dict[str, torch.Tensor]:
    return {"prompt_index": torch.tensor(items)}


@exit_on_error
def main() -> None:
    args = step_parser(3).parse_args()
    check_flags(args)
    normalization = check_models(args)
    run = start_run(args)
    for line in flag_warnings(args, sys.argv[1:]):
        run.log.info(line)

    # a DeepSpeed-Chat folder is converted whole in memory; ZeRO-3 partitions it when its engine starts
    partition_reward = None if is_dschat_checkpoint(args.reward_model_name_or_path) else args.offload_reward_model
    with loaded_with(run.zero3, _frozen(run.ds_config, partition_reward)):
        reward_model, reward_tokenizer, _ = load_trained_reward_model(args.reward_model_name_or_path)
    prompts, held_out, report = load_rows(DataSpec.from_args(args, phase=2, fields=("prompt",)))
    for line in report.lines():
        run.log.info(line)
    held_out = held_out[:args.eval_iters * args.per_device_eval_batch_size]
    batch = args.per_device_generation_batch_size * args.generation_batches  # prompts sampled before training
    if len(prompts) < batch * dist.world_size():
        rollouts = ("one rollout" if args.generation_batches == 1
                    else f"the --generation_batches {args.generation_batches} rollouts")
        raise UserError(f"{len(prompts)} prompts: fewer than {rollouts} of --per_device_generation_batch_size "
                        f"{args.per_device_generation_batch_size} on {dist.world_size()} process(es)")

    tokenizer = load_tokenizer(args.model_name_or_path, "end", append_eos=False,
                               trust_remote_code=args.trust_remote_code)
    shared = bool(args.lora_dim and args.only_optimize_lora)  # the frozen weights are the starting policy's
    if not shared:
        with loaded_with(run.zero3, _frozen(run.ds_config, args.offload_reference_model)):
            reference = load_causal_lm(args.model_name_or_path, tokenizer, 0.0, False, args.trust_remote_code)
        reference.requires_grad_(False).eval()
    model = add_lora(load_causal_lm(args.model_name_or_path, tokenizer, args.dropout, args.gradient_checkpointing,
                                    args.trust_remote_code), args)
    loader = train_loader(list(range(len(prompts))), batch, _indices, args.seed)
    ppo = args.algo == "ppo"
    steps = optimizer_steps(loader, args, args.generation_batches * args.ppo_epochs if ppo else 1)
    engine = build_engine(model, args, run.ds_config, steps)
    near = engine.device
    if shared:
        reference = WithoutAdapters(engine.module)
        run.log.info("reference: the actor with its LoRA adapters off (--only_optimize_lora), not a second copy")
    else:
        reference = frozen_model(reference, run.ds_config, args.offload_reference_model, near)
    reward_model = frozen_model(reward_model, run.ds_config, args.offload_reward_model, near)
    if run.zero3 is not None:
        run.log.info("ZeRO-3: the reference and reward model are partitioned across the processes, as the actor is")

    kind, extra = PolicyObjective, {}
    if ppo:
        kind, extra = PPOObjective, {"critic": critic_engine(args, tokenizer, run.zero3, steps)}
    held = {"actor": engine} | ({} if shared else {"reference": reference}) | {"reward model": reward_model} | extra
    run.log.info("weights held by each process: "
                 + ", ".join(f"{name} {weights_gib(one):.3f} GiB" for name, one in held.items()))
    objective = kind(args=args, prompts=prompts, tokenizer=tokenizer, reference=reference, reward_model=reward_model,
                     reward_tokenizer=reward_tokenizer, normalization=normalization,
                     judge=flawed_share if args.judge == "synthetic" else None, warn=run.log.info, **extra)
    final = train(engine, loader, args, objective,
                  lambda: objective.evaluate(engine, held_out, engine.global_steps, Path(args.output_dir)),
                  run.log, run.resume)
    run.finish(model, tokenizer, final)
    run.log.info(f"policy exported to {args.output_dir}")
    run.log.info(f"reward={final['reward']:.4f} (before {final.get('reward_before', final['reward']):.4f}), "
                 f"kl_to_reference={final['kl_to_reference']:.4f}")


if __name__ == "__main__":
    main()
