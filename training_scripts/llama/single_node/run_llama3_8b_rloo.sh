#!/usr/bin/env bash
# Step 3 only: RLOO on Llama-3-8B-Instruct against an RLHFlow-style Bradley-Terry reward model (FsfairX-LLaMA3-RM,
# which step 2's run_llama3_8b.sh reproduces). One node of 8 GPUs with 80 GB each; about 40 GB per GPU is an
# estimate, not measured here: the actor in bf16 under ZeRO-3 with Adam, its reference and the reward model
# partitioned as it is, and the key/value cache of 4 x 4 answers of up to 1,024 tokens. The actor's weights are
# gathered once per rollout to generate (--zero3_generation gather; partitioned if they do not fit). K = 4 answers at
# temperature 1 per prompt, lr 5e-7, kl_ctl 0.05, written with the tokenizer's chat template. For LoRA instead, add
# --actor_lora_dim 16 --only_optimize_lora --actor_lora_learning_rate 1e-5: the reference is then the actor with its
# adapters off, with no second copy.
#   bash training_scripts/llama/single_node/run_llama3_8b_rloo.sh [extra flags]
# Overrides: MODEL (the step-1 policy), REWARD_MODEL, DATA (prompts), OUTPUT, ZERO_STAGE, NUM_GPUS (see
# training_scripts/common.sh).
source "$(dirname "${BASH_SOURCE[0]}")/../../common.sh"
: "${MODEL:=meta-llama/Meta-Llama-3-8B-Instruct}" "${REWARD_MODEL:=sfairXC/FsfairX-LLaMA3-RM-v0.1}"
: "${DATA:=hendrydong/preference_700K}" "${OUTPUT:=output/llama3-8b-rloo}" "${ZERO_STAGE:=3}"
prepare

train rlhf "$OUTPUT" --algo rloo --actor_model_name_or_path "$MODEL" --critic_model_name_or_path "$REWARD_MODEL" \
  --data_path "${DATA_SOURCES[@]}" --data_split 0,0,1 --eval_fraction 0.01 --template chat --dtype bf16 \
  --actor_zero_stage "$ZERO_STAGE" --zero3_generation gather --actor_gradient_checkpointing --actor_dropout 0.0 \
  --num_generations 4 --temperature 1.0 --per_device_generation_batch_size 4 --per_device_training_batch_size 4 \
  --max_prompt_seq_len 1024 --max_answer_seq_len 1024 --actor_learning_rate 5e-7 --actor_weight_decay 0.0 \
  --kl_ctl 0.05 --num_train_epochs 1 --lr_scheduler_type constant --num_warmup_steps 10 --seed 1234 \
  --per_device_eval_batch_size 8 --eval_iters 16 --eval_interval 50 --save_interval 50 "$@"
summarize
