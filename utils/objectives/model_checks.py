"""Step 3's configuration mistakes that the models' configs and tokenizers show, refused with one line before any
weights load."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from transformers import AutoConfig, AutoTokenizer

from utils.errors import UserError
from utils.models.dschat_convert import is_dschat_checkpoint
from utils.models.reward_model import NORMALIZATION_KEY, checked_reward_config
from utils.objectives.algorithms import ALGORITHMS


def _positions(config: object) -> int | None:
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def check_models(args: argparse.Namespace) -> dict[str, float] | None:
    """The actor and reward model's configs (no weights) against the flags; returns the normalization constants
    that --reward_normalization needs."""
    try:
        actor = AutoConfig.from_pretrained(args.model_name_or_path, trust_remote_code=args.trust_remote_code)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load the actor '{args.model_name_or_path}': {err}") from None
    if any("SequenceClassification" in a for a in actor.architectures or []):
        raise UserError(f"--actor_model_name_or_path '{args.model_name_or_path}' is a {actor.architectures[0]}: the "
                        "actor is a causal LM (a step-1 output); the reward model goes to --critic_model_name_or_path")
    budget = args.max_prompt_seq_len + args.max_answer_seq_len
    if _positions(actor) and budget > _positions(actor):
        raise UserError(f"--max_prompt_seq_len + --max_answer_seq_len = {budget} is over the actor's "
                        f"{_positions(actor)} positions")
    algorithm = ALGORITHMS[args.algo]
    if algorithm.learns_from == "pairs" and _positions(actor) and args.max_seq_len > _positions(actor):
        raise UserError(f"--max_seq_len {args.max_seq_len} is over the actor's {_positions(actor)} positions")
    if not args.reward_model_name_or_path:  # DPO without a reward model (check_flags refused the others)
        return None
    if is_dschat_checkpoint(args.reward_model_name_or_path):
        if algorithm.critic:
            raise UserError(f"'{args.reward_model_name_or_path}' is a DeepSpeed-Chat step-2 folder: PPO trains its "
                            "critic from it, so export it first (python -m utils.models.dschat_convert)")
        reward = AutoConfig.from_pretrained(args.reward_model_name_or_path)  # converted when loaded
    else:
        reward = checked_reward_config(args.reward_model_name_or_path)
    if _positions(reward) and budget > _positions(reward):
        raise UserError(f"--max_prompt_seq_len + --max_answer_seq_len = {budget} is over the reward model's "
                        f"{_positions(reward)} positions")
    trained = Path(args.reward_model_name_or_path) / "training_args.json"
    template = json.loads(trained.read_text()).get("template") if trained.is_file() else None
    if template and template != args.template:
        raise UserError(f"--template {args.template}, but the reward model was trained on --template {template} "
                        f"texts ({trained}): its scores mean something only on those; pass --template {template}")
    if algorithm.critic:
        _check_critic_reads_actor_tokens(args)
    constants = getattr(reward, NORMALIZATION_KEY, None)
    if args.reward_normalization != "none" and "reward_normalization" in algorithm.reads and not constants:
        raise UserError(f"--reward_normalization {args.reward_normalization}: '{args.reward_model_name_or_path}' "
                        "holds no normalization constants; store them with rw_eval.py --model_name_or_path "
                        "REWARD_MODEL --data_path PAIRS --write_normalization")
    return constants


def _check_critic_reads_actor_tokens(args: argparse.Namespace) -> None:
    """PPO's critic values the actor's own token ids, so both must mean the same by each id."""
    vocabularies = []
    for name in (args.model_name_or_path, args.reward_model_name_or_path):
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=args.trust_remote_code)
        except (OSError, ValueError) as err:
            raise UserError(f"cannot load the tokenizer of '{name}': {err}") from None
        vocabularies.append(tokenizer.get_vocab())
    actor, critic = vocabularies
    differ = [token for token, index in actor.items() if critic.get(token) != index]
    if differ:  # the critic may know more tokens (an added pad), but each of the actor's must be its own
        raise UserError(f"--algo ppo: {len(differ)} of the actor's {len(actor)} tokens have another id, or none, in "
                        f"the reward model's tokenizer (e.g. {differ[0]!r}), and the critic, initialised from the "
                        "reward model, reads the actor's token ids; use RLOO or RAFT, which score text")
