#!/usr/bin/env bash
# Step 3 only: GRPO on GSM8K's grade-school maths with a checkable reward and no reward model: an answer scores 1
# when its last number (or last \boxed{}) equals the number after the question's `####`, else 0 (math_answer).
# The settings are veRL's GSM8K GRPO example (examples/grpo_trainer, written for Qwen2-7B-Instruct on one node of
# 8 GPUs; 89% on the test split in veRL's baseline table), here on Llama-3-8B-Instruct, the Llama launchers' policy:
# K = 5 answers per question at temperature 1, prompts of up to 512 tokens and answers of up to 1,024, 256
# questions (1,280 answers) per optimizer step (2 a GPU, 16 accumulation steps, 8 GPUs), lr 1e-6 constant, weight
# decay 0.01, clip 0.2, the k3 KL to the reference in the loss with beta 0.001, token-mean loss (--loss_type dapo),
# advantages scaled by each question's reward std, 15 epochs of the 7,473 train questions (about 440 steps). veRL
# samples 1,024 questions and takes 4 steps of 256 from them; here each step's 256 are sampled by the policy they
# train, so the ratio is exactly 1. The prompt is the bare question in the chat template; veRL's adds an
# instruction to answer after "####".
# One node of 8 GPUs with 80 GB each. Memory per GPU, an estimate, not measured: the actor's weights and Adam under
# ZeRO-3 (16 bytes a weight over 8 GPUs: 16 GB), its partitioned reference (2 GB), the actor gathered whole to
# generate (16 GB, once per rollout) with the key/value cache of 2 x 5 answers (2 GB); the training pass over 2 rows
# of a prompt and its 5 answers, whose checkpointed activations and fp32 log-probabilities over Llama-3's 128k
# vocabulary reach about 30 GB when every answer runs to 1,024 tokens: about 50 GB at most, less at usual lengths.
# Time, an estimate from token counts, not measured: Hugging Face generate decodes each GPU's 10 answers until the
# longest ends (~500 tokens assumed) at ~30 ms a token for an 8B model, 16 times a step: ~4 minutes; the training
# and reference passes (~4e15 FLOPs per GPU a step) add under a minute at 40% of an H100's bf16 peak. So about 5
# minutes a step, 2.5 hours an epoch (29 steps), 35-40 hours for all 15 on 8 H100s. The learning rate is constant,
# so a run stopped early holds the model of a shorter one (--num_train_epochs 1: about 2.5 hours).
# Before training and every 5 steps, the held-out figures are `accuracy` (one answer sampled at temperature 1) and
# `greedy_accuracy` on 128 questions of GSM8K's test split (a seeded draw; about 3.5 points of standard error): each
# GPU answers its share in one batch, and the whole split (1,319) would not fit beside the training state.
#   bash training_scripts/llama/single_node/run_llama3_8b_grpo.sh [extra flags]
# Overrides: MODEL (the step-1 policy), DATA (questions with GSM8K's `#### N` answers), OUTPUT, ZERO_STAGE,
# NUM_GPUS (see training_scripts/common.sh).
source "$(dirname "${BASH_SOURCE[0]}")/../../common.sh"
: "${MODEL:=meta-llama/Meta-Llama-3-8B-Instruct}" "${DATA:=openai/gsm8k}" "${OUTPUT:=output/llama3-8b-grpo}"
: "${ZERO_STAGE:=3}"
prepare

train rlhf "$OUTPUT" --algo grpo --actor_model_name_or_path "$MODEL" --reward_funcs math_answer \
  --data_path "${DATA_SOURCES[@]}" --data_split 0,0,1 --template chat --dtype bf16 \
  --actor_zero_stage "$ZERO_STAGE" --zero3_generation gather --actor_gradient_checkpointing --actor_dropout 0.0 \
  --num_generations 5 --temperature 1.0 --per_device_generation_batch_size 2 --per_device_training_batch_size 2 \
  --gradient_accumulation_steps 16 --max_prompt_seq_len 512 --max_answer_seq_len 1024 \
  --actor_learning_rate 1e-6 --actor_weight_decay 0.01 --lr_scheduler_type constant --num_warmup_steps 0 \
  --kl_ctl 0.001 --cliprange 0.2 --loss_type dapo --scale_rewards group --num_train_epochs 15 --seed 1234 \
  --per_device_eval_batch_size 16 --eval_iters 8 --eval_interval 5 --save_interval 20 "$@"
summarize
