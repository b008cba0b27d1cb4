"""Command-line flags, with DeepSpeed-Chat's names and meanings, shared by every step.

Nothing here imports torch, deepspeed or transformers: --help and every mistake in the flags alone answer at once,
before the entrypoints load the engine.
"""
from __future__ import annotations

import argparse
import sys

from utils.data.formatting import TEMPLATES
from utils.data.sources import FIELDS, SOURCES_HELP
from utils.errors import UserError
from utils.objectives.algorithms import ALGORITHMS
from utils.objectives.policy_checks import DSCHAT_IGNORED, DSCHAT_REFUSED, check_flags
from utils.rewards.builtin import BUILTINS

# transformers' SchedulerType values, written out so that parsing needs no transformers (a test compares them)
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
              "warmup_stable_decay", "greedy")

ALGOS = tuple(ALGORITHMS)  # step 3's --algo
DATA_FLAGS = ("data_path", "eval_data_path", "sft_only_data_path", "prompt_data_path")
DEMO_DATA = ["synthetic"]  # what a run trains on when no data flag is given at all

# DeepSpeed-Chat's step 3 names the shared flags after the model they set: the actor's.
ACTOR_NAMES = {"model_name_or_path": "actor_model_name_or_path", "dropout": "actor_dropout",
               "gradient_checkpointing": "actor_gradient_checkpointing", "learning_rate": "actor_learning_rate",
               "weight_decay": "actor_weight_decay", "zero_stage": "actor_zero_stage",
               "per_device_train_batch_size": "per_device_training_batch_size", "lora_dim": "actor_lora_dim",
               "lora_module_name": "actor_lora_module_name", "lora_learning_rate": "actor_lora_learning_rate"}


def _flag(name: str, step: int) -> str:
    """The option a shared setting goes by in this step; its dest stays `name`, which the engine reads."""
    return "--" + (ACTOR_NAMES.get(name, name) if step == 3 else name)


def reading_flags(group: argparse._ArgumentGroup, eval_help: str) -> None:
    """How rows are read and written as text: shared by the training steps and rw_eval.py."""
    group.add_argument("--eval_split", default=None,
                       help="Hugging Face split string of the eval rows, e.g. 'test[6275:]'. " + eval_help)
    for name in FIELDS:
        group.add_argument(f"--{name}_column", default=None,
                           help=f"The column of local files and datasets that holds the {name} (default: {name}).")
    group.add_argument("--on_bad_row", choices=["error", "skip"], default="error",
                       help="A malformed, mistyped, empty or non-UTF-8 row, or a pair whose transcripts differ "
                            "before the last answer: stop with its file and line, or skip it and count it. "
                            "Default: %(default)s")
    group.add_argument("--template", choices=sorted(TEMPLATES), default="dschat",
                       help="How prompt and answer become text: " + "; ".join(
                           f"{name}: {fmt.description}" for name, fmt in sorted(TEMPLATES.items())))


def _data_flags(parser: argparse.ArgumentParser) -> None:
    """Where rows come from, how they are split and how they become tokens."""
    data = parser.add_argument_group("data")
    data.add_argument("--data_path", nargs="*", default=None,
                      help=SOURCES_HELP + " Default, only when no data flag is given at all: synthetic, the built-in "
                      "demo data (with a warning).")
    data.add_argument("--data_split", default="2,4,4",
                      help="DeepSpeed-Chat's phase split of each source's train rows: step 1 takes the first share, "
                           "step 2 the second, step 3 the third. Default: %(default)s")
    data.add_argument("--eval_data_path", nargs="*", default=None,
                      help="Explicit eval sources. Without them a source's own test split is used, or, for a source "
                           "without one, a seeded --eval_fraction of its rows is held out.")
    data.add_argument("--train_split", default="train",
                      help="Hugging Face split string of the rows to train on, e.g. 'train+test[:6275]'. "
                           "Default: %(default)s")
    reading_flags(data, eval_help="Default: the source's test or validation split, or else a held-out "
                                  "--eval_fraction of the train rows.")
    data.add_argument("--eval_fraction", type=float, default=0.1,
                      help="Share of rows held out for eval from sources without a test split. Default: %(default)s")
    data.add_argument("--data_output_path", default="/tmp/data_files/",
                      help="Where tokenized data is cached (Arrow files, keyed by the rows, tokenizer and settings), "
                           "so that a rerun skips tokenization. Default: %(default)s")
    data.add_argument("--add_eot_token", action="store_true",
                      help="Make --eot_token one special token and the EOS that ends every text (DeepSpeed-Chat).")
    data.add_argument("--eot_token", default="<|endoftext|>", help="Default: %(default)s")
    data.add_argument("--max_seq_len", type=int, default=512, help="Longest tokenized sequence. Default: %(default)s")
    data.add_argument("--overlength", choices=["truncate", "drop"], default="truncate",
                      help="Rows over --max_seq_len: truncate cuts the prompt from the left and keeps the answer and "
                           "EOS whole; drop skips the row. Both are counted. Step 1's --packing concat leaves training "
                           "texts whole: they continue into the next block. Default: %(default)s")


def _model_flags(parser: argparse.ArgumentParser, step: int) -> None:
    """The model to start from."""
    model = parser.add_argument_group("model")
    model.add_argument(_flag("model_name_or_path", step), dest="model_name_or_path", required=True,
                       help="A hub name or a local directory" + (": the step-1 output." if step == 3 else "."))
    model.add_argument(_flag("dropout", step), dest="dropout", type=float, default=None,
                       help="Set the model's dropout probabilities; default: keep the model's own.")
    model.add_argument(_flag("gradient_checkpointing", step), dest="gradient_checkpointing", action="store_true")
    model.add_argument("--trust_remote_code", action="store_true",
                       help="Run code that a hub model ships with it (off: only transformers' own code runs).")


def _training_flags(parser: argparse.ArgumentParser, step: int) -> None:
    """Optimization, evaluation and the output directory."""
    train = parser.add_argument_group("training")
    train.add_argument(_flag("per_device_train_batch_size", step), dest="per_device_train_batch_size", type=int,
                       default=16, help="Prompts per device in one training micro-batch" if step == 3 else None)
    train.add_argument("--per_device_eval_batch_size", type=int, default=16)
    train.add_argument(_flag("learning_rate", step), dest="learning_rate", type=float,
                       default=9.65e-6 if step == 3 else 5e-5)
    train.add_argument(_flag("weight_decay", step), dest="weight_decay", type=float, default=0.0)
    train.add_argument("--num_train_epochs", type=int, default=1)
    train.add_argument("--gradient_accumulation_steps", type=int, default=1)
    train.add_argument("--lr_scheduler_type", choices=SCHEDULERS, default="cosine", help="Default: %(default)s")
    train.add_argument("--num_warmup_steps", type=int, default=0)
    train.add_argument("--seed", type=int, default=1234)
    train.add_argument("--output_dir", required=True, help="Where the exported model and logs go.")
    train.add_argument("--eval_interval", type=int, default=0,
                       help="Evaluate every N optimizer steps (0: only before and after training).")
    train.add_argument("--eval_iters", type=int, default=100, help="At most this many eval batches per evaluation.")
    train.add_argument("--print_loss", action="store_true", help="Print the loss of every optimizer step.")


def _speed_flags(parser: argparse.ArgumentParser, step: int) -> None:
    """Batching and speed: what fills a batch and how it is measured."""
    speed = parser.add_argument_group("batching and speed")
    speed.add_argument("--length_grouping", choices=["on", "off"], default="off" if step == 1 else "on",
                       help="on: sort each seeded mega-batch of 64 batches by length, then shuffle the batches, so "
                            "padding becomes rare; off: plain shuffled order. Default: %(default)s (pairs gain the "
                            "most: step 2, and step 3's --algo dpo, the one step-3 algorithm it applies to; in step 1 "
                            "uniform-length batches cost perplexity, and --packing has no padding).")
    speed.add_argument("--pad_to_max_len", action="store_true",
                       help="Pad every row to --max_seq_len, as DeepSpeed-Chat does (slower; for parity checks).")
    speed.add_argument("--peak_tflops", type=float, default=None,
                       help="Peak TFLOP/s of one device, for the logged MFU; default: measured by a matmul at start.")


def _checkpoint_flags(parser: argparse.ArgumentParser) -> None:
    """Checkpoints, resume and what stops a run."""
    saving = parser.add_argument_group("checkpoints and resume")
    saving.add_argument("--save_interval", type=int, default=0,
                        help="Save a checkpoint every N optimizer steps under OUTPUT_DIR/checkpoints (0: never; a "
                             "SIGTERM or SIGUSR1 still saves one before the run stops).")
    saving.add_argument("--save_total_limit", type=int, default=2, help="Keep the newest N checkpoints.")
    saving.add_argument("--resume", action="store_true",
                        help="Continue from the latest complete checkpoint in --output_dir (a fresh start if none).")
    saving.add_argument("--resume_from", default=None, help="Continue from this checkpoint directory.")
    saving.add_argument("--overwrite_output_dir", action="store_true",
                        help="Allow an --output_dir that holds a finished run; its files are replaced.")
    saving.add_argument("--on_nan", choices=["stop", "skip"], default="stop",
                        help="A non-finite loss: stop, naming the last good checkpoint, or skip that micro-batch and "
                             "count it. A non-finite gradient norm always stops (fp16 overflows are DeepSpeed's to "
                             "skip, and are counted). Default: %(default)s")


def _lora_flags(parser: argparse.ArgumentParser, step: int) -> None:
    """LoRA through PEFT, with DeepSpeed-Chat's flag names (step 3: the actor's)."""
    lora = parser.add_argument_group("LoRA (through PEFT)")
    lora.add_argument(_flag("lora_dim", step), dest="lora_dim", type=int, default=0,
                      help="LoRA rank; 0: no LoRA. Default: %(default)s")
    lora.add_argument(_flag("lora_module_name", step), dest="lora_module_name", default="layers.",
                      help="Add adapters to the linear layers whose names contain this (DeepSpeed-Chat uses "
                           "'decoder.layers.' for OPT). Default: %(default)s")
    lora.add_argument("--only_optimize_lora", action="store_true",
                      help="Train only the adapters (and step 2's score head); otherwise every weight trains too.")
    lora.add_argument(_flag("lora_learning_rate", step), dest="lora_learning_rate", type=float, default=5e-4,
                      help="The adapters' learning rate, a parameter group of its own. Default: %(default)s")
    lora.add_argument("--lora_alpha", type=float, default=None,
                      help="LoRA alpha; the update is scaled by alpha / rank. Default: the rank (scale 1, as "
                           "DeepSpeed-Chat).")
    lora.add_argument("--lora_dropout", type=float, default=0.0, help="Default: %(default)s")
    lora.add_argument("--save_adapter", action="store_true",
                      help="Also save the adapter (PEFT format, with the score head) in OUTPUT_DIR/adapter; the "
                           "exported model always has the adapters merged in.")


def _engine_flags(parser: argparse.ArgumentParser, step: int) -> None:
    """The DeepSpeed engine: precision, ZeRO, offload, logging."""
    engine = parser.add_argument_group("DeepSpeed engine")
    engine.add_argument("--local_rank", type=int, default=-1, help="Set by the deepspeed launcher.")
    engine.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default=None,
                        help="Training precision. Default: fp16 on GPU (as DeepSpeed-Chat), fp32 on CPU.")
    engine.add_argument(_flag("zero_stage", step), dest="zero_stage", type=int, choices=[0, 1, 2, 3], default=0)
    engine.add_argument("--offload", action="store_true", help="Offload optimizer state (and stage-3 params) to CPU.")
    engine.add_argument("--compute_fp32_loss", action="store_true",
                        help="Compute the loss in fp32 when training in fp16/bf16.")
    engine.add_argument("--enable_tensorboard", action="store_true")
    engine.add_argument("--tensorboard_path", default=f"step{step}_tensorboard")
    engine.add_argument("--deepspeed", action="store_true",
                        help="Accepted for DeepSpeed launch scripts: DeepSpeed always runs the training here.")
    engine.add_argument("--deepspeed_config", default=None,
                        help="A DeepSpeed JSON config whose keys override those built from the flags.")


def _common_flags(parser: argparse.ArgumentParser, step: int) -> None:
    """The flags every training step shares, in groups by purpose."""
    _data_flags(parser)
    _model_flags(parser, step)
    _training_flags(parser, step)
    _speed_flags(parser, step)
    _checkpoint_flags(parser)
    _lora_flags(parser, step)
    _engine_flags(parser, step)


def _sft_flags(parser: argparse.ArgumentParser) -> None:
    sft = parser.add_argument_group("supervised fine-tuning")
    sft.add_argument("--sft_only_data_path", nargs="*", default=[],
                     help="Sources used only by step 1, all of their train rows (no --data_split share); rows need "
                          "prompt and chosen fields.")
    sft.add_argument("--train_on_prompt", action="store_true",
                     help="Count the prompt tokens in the loss too (DeepSpeed-Chat does); default: answer and EOS "
                          "only.")
    sft.add_argument("--packing", nargs="?", const="concat", choices=["concat", "segments"], default=None,
                     help="concat (what --packing alone means): concatenate the training texts and cut them into "
                          "--max_seq_len blocks, LMFlow's recipe; attention then crosses the borders between texts. "
                          "segments: whole texts packed into rows of up to --max_seq_len, with positions restarting "
                          "and attention kept within each text: the losses of unpacked texts, without padding.")


def _reward_flags(parser: argparse.ArgumentParser) -> None:
    reward = parser.add_argument_group("reward model")
    reward.add_argument("--score_token", choices=["end", "first_pad"], default="end",
                        help="end: score at each sequence's last attended token (its EOS). first_pad: DeepSpeed-Chat's "
                             "rule, pad = EOS, score just before the first pad after --num_padding_at_beginning.")
    reward.add_argument("--num_padding_at_beginning", type=int, default=None,
                        help="Pad (EOS) ids the tokenizer puts before the text: 1 for OPT, 0 for Llama. Checked "
                             "against the tokenizer; default: what the tokenizer produces.")
    reward.add_argument("--loss", choices=["bt", "dschat"], default="bt",
                        help="bt: -logsigmoid(r_chosen - r_rejected) at the score tokens. dschat: DeepSpeed-Chat's "
                             "mean over the tokens from the first differing token to the later end.")
    reward.add_argument("--center_rewards_coefficient", type=float, default=0.0,
                        help="Add coef * mean((r_chosen + r_rejected)^2) to keep rewards centred on 0.")
    reward.add_argument("--no_shared_prompt", action="store_true",
                        help="Run chosen and rejected as two sequences. Default: one row per pair that computes the "
                             "shared prompt once (exact; used with --loss bt and --score_token end).")


def _rlhf_flags(parser: argparse.ArgumentParser) -> None:
    models = parser.add_argument_group("reward model and reference")
    models.add_argument("--critic_model_name_or_path", "--reward_model_name_or_path", dest="reward_model_name_or_path",
                        default=None, help="The reward model: a step-2 output (or a DeepSpeed-Chat step-2 folder). "
                                           "Optional for --algo dpo, which then evaluates on held-out pairs only.")
    models.add_argument("--num_padding_at_beginning", type=int, default=None,
                        help="Accepted for DeepSpeed-Chat command lines; the reward model's own saved tokenizer and "
                             "pooling decide where its score is read.")
    models.add_argument("--offload_reference_model", action="store_true",
                        help="Keep the frozen reference on the CPU (it runs one forward per rollout).")
    models.add_argument("--offload_reward_model", action="store_true",
                        help="Keep the reward model on the CPU (it scores each rollout once).")
    models.add_argument("--enable_hybrid_engine", action="store_true",
                        help="Accepted for DeepSpeed-Chat command lines; generation uses Hugging Face generate.")
    models.add_argument("--prompt_data_path", nargs="*", default=[],
                        help="Prompt sources used only by step 3, all of their train rows (no --data_split share).")

    rewards = parser.add_argument_group("checkable rewards")
    rewards.add_argument("--reward_funcs", nargs="*", default=[],
                         help="Reward functions of each prompt and answer, added to the reward model's score: "
                              "built-ins (" + "; ".join(f"{name}: {text}" for name, text in BUILTINS.items()) + "), "
                              "or a function of your own as path/to/file.py:function or package.module:function, "
                              "called as f(prompts, answers, **columns) and returning one float, or None where it "
                              "does not apply, per answer (see the step-3 README).")
    rewards.add_argument("--reward_weights", nargs="*", type=float, default=None,
                         help="One weight per --reward_funcs entry, then one for the reward model's score when a "
                              "reward model is given. Default: 1 each.")
    rewards.add_argument("--format_regex", default=None,
                         help="The format reward's pattern: 1 when the whole answer, stripped, matches it ('.' "
                              "matches newlines too), else 0.")
    rewards.add_argument("--overlong_buffer", type=int, default=None,
                         help="The overlong reward's ramp, in tokens: 0 up to --max_answer_seq_len minus this, "
                              "falling linearly to -1 at --max_answer_seq_len. Default: a quarter of "
                              "--max_answer_seq_len.")
    rewards.add_argument("--reward_url", default=None,
                         help="A remote reward server speaking OpenRLHF's protocol: POST {\"query\", \"prompts\", "
                              "\"labels\"} -> {\"rewards\"}.")
    rewards.add_argument("--reward_timeout", type=float, default=30.0,
                         help="Seconds to wait for one answer of --reward_url. Default: %(default)s")
    rewards.add_argument("--reward_retries", type=int, default=3,
                         help="Tries after a failed or timed-out --reward_url request before the run stops. Default: "
                              "%(default)s")

    rollout = parser.add_argument_group("rollout")
    rollout.add_argument("--algo", choices=ALGOS, default="rloo",
                         help="; ".join(f"{a.name}: {a.summary}" for a in ALGORITHMS.values())
                         + ". Default: %(default)s")
    rollout.add_argument("--num_generations", type=int, default=4, help="K answers per prompt. Default: %(default)s")
    rollout.add_argument("--per_device_generation_batch_size", type=int, default=16,
                         help="Prompts per device in one rollout. Default: %(default)s")
    rollout.add_argument("--generation_batches", type=int, default=1,
                         help="Rollouts sampled before training on them (PPO and GRPO; 1 for the others). Default: "
                              "%(default)s")
    rollout.add_argument("--ppo_epochs", type=int, default=1,
                         help="Passes over the sampled rollouts (PPO and GRPO; 1 for the others). Default: %(default)s")
    rollout.add_argument("--max_prompt_seq_len", type=int, default=256,
                         help="Longer prompts keep their last tokens. Default: %(default)s")
    rollout.add_argument("--max_answer_seq_len", type=int, default=256,
                         help="Answers stop at the EOS or here (truncated, counted). Default: %(default)s")
    rollout.add_argument("--temperature", type=float, default=1.0, help="Sampling temperature. Default: %(default)s")
    rollout.add_argument("--zero3_generation", choices=["gather", "partitioned"], default="gather",
                         help="With --actor_zero_stage 3: gather the actor's weights once per rollout and generate "
                              "locally, or keep them partitioned, gathered layer by layer at every token (for actors "
                              "too large to gather), every process stepping until all are done. Default: "
                              "%(default)s")
    rollout.add_argument("--no_shared_prompt", action="store_true",
                         help="Compute each prompt once per sample. Default: once for its K samples, whose "
                              "generation continues from its keys and values (the same answers, fewer FLOPs).")
    rollout.add_argument("--top_k", type=int, default=0, help="RAFT only: sample from the k likeliest tokens.")
    rollout.add_argument("--top_p", type=float, default=1.0, help="RAFT only: nucleus sampling.")

    objective = parser.add_argument_group("objective")
    objective.add_argument("--kl_ctl", type=float, default=0.1,
                           help="RLOO and PPO: the weight of the summed log-ratio to the reference in the reward; "
                                "GRPO: beta, the weight of the k3 KL to the reference in the loss, per token. "
                                "Default: %(default)s (0 under --algo grpo, as TRL's GRPOTrainer)")
    objective.add_argument("--clip_reward_value", type=float, default=5.0,
                           help="Clip the (normalized) reward model score to ±this. Default: %(default)s")
    objective.add_argument("--cliprange", type=float, default=0.2,
                           help="PPO and GRPO: the ratio clip in the policy loss (GRPO: below 1). Default: "
                                "%(default)s")
    objective.add_argument("--cliprange_value", type=float, default=0.2,
                           help="PPO: clip the critic's new values to the old ±this in its loss. Default: %(default)s")
    objective.add_argument("--gamma", type=float, default=1.0, help="PPO: discount. Default: %(default)s")
    objective.add_argument("--lam", type=float, default=0.95, help="PPO: GAE's lambda. Default: %(default)s")
    objective.add_argument("--no_whiten_advantages", action="store_true",
                           help="PPO: use the advantages as they are, not shifted and scaled to mean 0, std 1 over "
                                "the answer tokens of the rollout on all processes.")
    objective.add_argument("--reward_normalization", choices=["none", "z", "minmax"], default="none",
                           help="Normalize scores with the constants rw_eval.py --write_normalization stored in the "
                                "reward model's config.json. Default: %(default)s")
    objective.add_argument("--raft_selection", choices=["per_prompt", "global"], default="per_prompt",
                           help="RAFT keeps each prompt's best answer, or the best 1/K of all answers (LMFlow). "
                                "Default: %(default)s")
    grpo = parser.add_argument_group("GRPO (--algo grpo): its --ppo_epochs passes take the ratio against the "
                                     "log-probabilities recorded at sampling")
    grpo.add_argument("--scale_rewards", choices=["group", "batch", "none"], default="group",
                      help="Each advantage is the reward minus its group's mean, divided by the group's std (group), "
                           "the std of all the step's rewards (batch), or nothing (none: Dr. GRPO, which does not "
                           "weigh a prompt by how evenly its answers split). Default: %(default)s")
    grpo.add_argument("--loss_type", choices=["grpo", "dapo", "dr_grpo", "bnpo"], default="dapo",
                      help="How token losses add up: grpo, each answer's token mean, then the mean over answers "
                           "(a long answer's tokens weigh less); dapo, the mean over all answer tokens of all "
                           "processes; dr_grpo, their sum over answers x --max_answer_seq_len; bnpo, each process's "
                           "own token mean. Default: %(default)s, as TRL's GRPOTrainer")
    grpo.add_argument("--cliprange_high", type=float, default=None,
                      help="The ratio clip above 1 (DAPO's clip-higher uses 0.28). Default: --cliprange")
    grpo.add_argument("--filter_zero_variance_groups", action="store_true",
                      help="Leave out of the loss the prompts whose K rewards are all equal (their advantages are 0; "
                           "DAPO's dynamic sampling); counted in groups_dropped.")
    grpo.add_argument("--mask_truncated_answers", action="store_true",
                      help="Leave answers that reach --max_answer_seq_len without the EOS out of the loss; counted "
                           "in answers_masked.")
    dpo = parser.add_argument_group("DPO (--algo dpo and online_dpo)")
    dpo.add_argument("--beta", type=float, default=0.1,
                     help="How far the policy may move from the reference: the implicit reward is beta * log(pi / "
                          "pi_ref). Default: %(default)s")
    dpo.add_argument("--dpo_loss", choices=["sigmoid", "ipo"], default="sigmoid",
                     help="sigmoid: DPO's -log sigmoid(beta h); ipo: (h - 1 / (2 beta))^2. Default: %(default)s")
    dpo.add_argument("--label_smoothing", type=float, default=0.0,
                     help="sigmoid loss: the share of pairs assumed mislabelled (conservative DPO). Default: "
                          "%(default)s")
    dpo.add_argument("--precompute_ref_log_probs", action="store_true",
                     help="dpo: compute the reference's log-probabilities of every pair in one pass before training "
                          "(kept in OUTPUT_DIR for --resume), then free the reference.")
    dpo.add_argument("--num_iterations", type=int, default=0,
                     help="online_dpo: iterations; 0: as many as the prompts fill over --num_train_epochs. Default: "
                          "%(default)s")
    dpo.add_argument("--prompts_per_iteration", type=int, default=0,
                     help="online_dpo: prompts sampled per iteration, on all processes together, generated "
                          "--per_device_generation_batch_size at a time and trained --per_device_training_batch_size "
                          "pairs at a time; 0: one generation batch per process. Default: %(default)s")
    dpo.add_argument("--tie_threshold", type=float, default=0.0,
                     help="online_dpo: a prompt whose best and worst rewards differ by this or less gives no pair "
                          "(skipped, counted). Default: %(default)s")
    critic = parser.add_argument_group("critic (PPO): initialised from the reward model, trained by its own engine")
    critic.add_argument("--critic_learning_rate", type=float, default=5e-6, help="Default: %(default)s")
    critic.add_argument("--critic_weight_decay", type=float, default=0.0, help="Default: %(default)s")
    critic.add_argument("--critic_zero_stage", type=int, choices=[0, 1, 2, 3], default=None,
                        help="Default: the actor's.")
    critic.add_argument("--critic_gradient_checkpointing", action="store_true")
    critic.add_argument("--critic_dropout", type=float, default=None,
                        help="Set the critic's dropout probabilities; default: keep the model's own.")
    critic.add_argument("--critic_lora_dim", type=int, default=0, help="LoRA rank of the critic; 0: no LoRA.")
    critic.add_argument("--critic_lora_module_name", default="layers.",
                        help="Modules of the critic whose names contain this get LoRA. Default: %(default)s")
    critic.add_argument("--critic_lora_learning_rate", type=float, default=5e-4,
                        help="The critic's adapters' learning rate. Default: %(default)s")
    dschat = parser.add_argument_group("DeepSpeed-Chat flags without a counterpart here (see the step-3 README)")
    for name in DSCHAT_IGNORED:
        dschat.add_argument(f"--{name}", nargs="?", const=True, default=None, help="Accepted and ignored, with a "
                            "warning: " + DSCHAT_IGNORED[name] + ".")
    for name in DSCHAT_REFUSED:
        dschat.add_argument(f"--{name}", nargs="?", const=True, default=None, help="Refused: " + DSCHAT_REFUSED[name]
                            + ".")
    objective.add_argument("--judge", choices=["none", "synthetic"], default="none",
                           help="synthetic: report the share of rude, evasive, looping or empty answers on held-out "
                                "synthetic prompts. Default: %(default)s")


STEPS = {
    1: ("Step 1: supervised fine-tuning on prompts and chosen answers; exports a Hugging Face causal LM.", _sft_flags),
    2: ("Step 2: train a reward model on preference pairs and export it as a Hugging Face sequence-classification "
        "model.", _reward_flags),
    3: ("Step 3: improve the step-1 policy with the step-2 reward model (RLOO, RAFT, PPO, online DPO) or with "
        "preference pairs (DPO); exports a Hugging Face causal LM.", _rlhf_flags),
}


# The one rule for flags that not every run reads: the runs ("step 1", "step 2", or a step-3 --algo) that read each.
# A flag missing here is read by every run that has it. A flag given on the command line that this run does not
# read is named in one warning line before the run starts; step 3's check_flags refuses instead where ignoring a
# flag would give another run than the one asked for.
_STEPS_READING = {
    **dict.fromkeys(("add_eot_token", "eot_token", "pad_to_max_len", "compute_fp32_loss", "max_seq_len", "overlength",
                     "length_grouping", "data_output_path"), {"step 1", "step 2"}),
    "num_padding_at_beginning": {"step 2"},
    **dict.fromkeys([*DSCHAT_IGNORED, "enable_hybrid_engine"], set()),
}
READ_BY: dict[str, frozenset[str]] = {  # step 3's algorithm-only flags, from each algorithm's entry
    name: frozenset(_STEPS_READING.get(name, set()) | {a.name for a in ALGORITHMS.values() if name in a.reads})
    for name in [*_STEPS_READING, *(name for a in ALGORITHMS.values() for name in a.reads)]}
NOT_READ = DSCHAT_IGNORED | {"enable_hybrid_engine": "generation uses Hugging Face generate"}  # why no run reads these


def step_parser(step: int) -> argparse.ArgumentParser:
    """The flags every step shares, then the step's own."""
    description, own_flags = STEPS[step]
    parser = argparse.ArgumentParser(description=description)
    _common_flags(parser, step)
    own_flags(parser)
    return parser


def parse_flags(step: int, argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The step's flags from argv (default: the command line), checked as far as flags alone allow, and the warnings
    to log once the run's log is open. Imports nothing heavy, so that every mistake here is reported at once."""
    argv = sys.argv[1:] if argv is None else argv
    args = step_parser(step).parse_args(argv)
    given = given_flags(step, argv)
    if step == 3:
        for name, value in ALGORITHMS[args.algo].defaults:  # an algorithm's own default, unless given
            if name not in given:
                setattr(args, name, value)
        check_flags(args)
    warnings = _data_sources(args, step, given)
    run = f"step {step}" if step < 3 else args.algo
    unread = [name for name in given if run not in READ_BY.get(name, {run})]
    if unread:
        where = f"step 3, --algo {args.algo}" if step == 3 else f"step {step}"
        warnings.append(f"warning: this run ({where}) does not read " + ", ".join(
            f"{_option(step, name)} ({NOT_READ.get(name) or 'read by ' + _runs(READ_BY[name])})" for name in unread))
    return args, warnings


def given_flags(step: int, argv: list[str]) -> list[str]:
    """The dests of the flags on the command line, in parser order, whatever spelling (alias, prefix, --x=y) gave
    them: argv parsed again with no defaults, so that only what was given is set."""
    parser = step_parser(step)
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    given = vars(parser.parse_args(argv))
    return [action.dest for action in parser._actions if action.dest in given]


def _data_sources(args: argparse.Namespace, step: int, given: list[str]) -> list[str]:
    """The built-in demo data only when no data flag is given at all; a warning says so."""
    if not set(DATA_FLAGS) & set(given):
        args.data_path = list(DEMO_DATA)
        return [f"warning: no data flag given ({', '.join('--' + f for f in DATA_FLAGS if hasattr(args, f))}): "
                "this run trains on the built-in demo data (--data_path synthetic)"]
    args.data_path = args.data_path or []
    if not args.data_path and not (getattr(args, "sft_only_data_path", None) or getattr(args, "prompt_data_path", None)):
        train_flags = {1: "--data_path or --sft_only_data_path", 2: "--data_path",
                       3: "--data_path" if getattr(args, "algo", "") == "dpo" else "--data_path or --prompt_data_path"}
        raise UserError(f"no training data: give {train_flags[step]} (--eval_data_path sources are only evaluated)")
    return []


def _option(step: int, name: str) -> str:
    return _flag(name, step) if name in ACTOR_NAMES else "--" + name


def _runs(runs: frozenset[str]) -> str:
    steps = sorted(r for r in runs if r.startswith("step"))
    algos = [a for a in ALGOS if a in runs]
    return " and ".join(steps + ([f"--algo {', '.join(algos)}"] if algos else []))
