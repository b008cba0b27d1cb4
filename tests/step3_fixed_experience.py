"""One step-3 optimizer step on a fixed rollout, under the flags given, for each algorithm in $ALGOS (rloo,raft):
tests/test_rlhf_processes.py runs it on 1 and on 2 processes (ZeRO-2), which must end with the same weights. The
rollout is sampled whole, with one seed, on every process; each process learns from its own share of the prompts, as
in a run. The algorithms share a launch, as each launch spends seconds importing."""
import os
import sys
from pathlib import Path

import torch

from utils import distributed as dist
from utils.engine.ds_config import deepspeed_config
from utils.engine.loop import build_engine
from utils.flags import step_parser
from utils.models.loading import load_causal_lm, load_tokenizer
from utils.objectives.algorithms import objective_class
from utils.objectives.answer_rewards import AnswerRewards
from utils.objectives.rollout import encode_prompts, sample, sampling_config

PROMPTS = [{"prompt": f"What is {i} plus {i + 1}?"} for i in range(8)]


def one_step(args) -> None:
    """The step of `args.algo`, from the starting weights: its weights and the scores go to weights-ALGO.pt."""
    torch.manual_seed(args.seed)
    tokenizer = load_tokenizer(args.model_name_or_path, "end", append_eos=False)
    reference = load_causal_lm(args.model_name_or_path, tokenizer, 0.0, False, False).requires_grad_(False).eval()
    model = load_causal_lm(args.model_name_or_path, tokenizer, 0.0, False, False)
    engine = build_engine(model, args, deepspeed_config(args, dist.world_size(), torch.float32), 1)
    objective = objective_class(args.algo)(args=args, prompts=PROMPTS, tokenizer=tokenizer, reference=reference,
                                           rewards=AnswerRewards(args, tokenizer), normalization=None)
    ids, mask, _ = encode_prompts(objective.prompt_texts(PROMPTS), tokenizer, args.max_prompt_seq_len)
    k = args.num_generations
    rollout = sample(reference, tokenizer, ids, mask, k, sampling_config(tokenizer, args.max_answer_seq_len, 1.0), 0)
    scores = torch.tensor([float(answer.count("e")) for answer in rollout.answers])
    share = len(rollout.answers) // dist.world_size()
    start = dist.rank() * share
    loss, _ = objective.loss(engine, rollout.rows(start, start + share), scores[start:start + share])
    engine.backward(loss)
    engine.step()
    if dist.is_main():
        weights = {name: p.detach().clone() for name, p in engine.module.named_parameters()}
        torch.save({"weights": weights, "scores": scores}, Path(args.output_dir) / f"weights-{args.algo}.pt")


def main() -> None:
    dist.init_distributed()
    for algo in os.environ["ALGOS"].split(","):
        one_step(step_parser(3).parse_args([*sys.argv[1:], "--algo", algo]))
    dist.shutdown()

if __name__ == "__main__":
    main()
