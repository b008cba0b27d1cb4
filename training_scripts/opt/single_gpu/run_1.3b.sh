#!/usr/bin/env bash
# Steps 1, 2 and 3 end to end on one GPU, as DeepSpeed-Chat's single-GPU example: OPT-1.3b fine-tuned with rank-128
# LoRA (step 1), an OPT-350m reward model (step 2), then PPO on the 1.3b actor with a critic initialised from that
# reward model, one answer per prompt (step 3), each on its --data_split 2,4,4 share of Dahoas/rm-static, in
# DeepSpeed-Chat's settings. One GPU with 48 GB (DeepSpeed-Chat's A6000; an estimate, not measured here): step 3
# holds the actor with its adapters and gradient checkpointing, its reference, the reward model and the critic.
#   bash training_scripts/opt/single_gpu/run_1.3b.sh [extra flags for every step]
# Overrides: MODEL (the actor's base), REWARD_MODEL (the reward model's base), DATA, OUTPUT, ZERO_STAGE (see
# training_scripts/common.sh). Each step's model and training.log land in OUTPUT/step{1_sft,2_reward_model,3_rlhf}.
source "$(dirname "${BASH_SOURCE[0]}")/../../common.sh"
: "${MODEL:=facebook/opt-1.3b}" "${REWARD_MODEL:=facebook/opt-350m}" "${DATA:=Dahoas/rm-static}"
: "${OUTPUT:=output/opt-1.3b-rlhf}" "${ZERO_STAGE:=0}" "${NUM_GPUS:=1}"
prepare
SHARES=(--data_path "${DATA_SOURCES[@]}" --data_split 2,4,4 --seed 1234 --lr_scheduler_type cosine)

train sft "$OUTPUT/step1_sft" --model_name_or_path "$MODEL" "${SHARES[@]}" --per_device_train_batch_size 8 \
  --per_device_eval_batch_size 8 --max_seq_len 512 --learning_rate 9.65e-6 --weight_decay 0.0 --num_train_epochs 1 \
  --gradient_accumulation_steps 8 --num_warmup_steps 0 --zero_stage "$ZERO_STAGE" --lora_dim 128 \
  --gradient_checkpointing --save_interval 500 "$@"
train reward "$OUTPUT/step2_reward_model" --model_name_or_path "$REWARD_MODEL" "${SHARES[@]}" \
  --num_padding_at_beginning 1 --per_device_train_batch_size 16 --per_device_eval_batch_size 16 --max_seq_len 512 \
  --learning_rate 5e-5 --weight_decay 0.1 --num_train_epochs 1 --dropout 0.0 --gradient_accumulation_steps 4 \
  --num_warmup_steps 0 --zero_stage "$ZERO_STAGE" --save_interval 500 "$@"
train rlhf "$OUTPUT/step3_rlhf" --algo ppo --actor_model_name_or_path "$OUTPUT/step1_sft" \
  --critic_model_name_or_path "$OUTPUT/step2_reward_model" "${SHARES[@]}" --num_padding_at_beginning 1 \
  --num_generations 1 --per_device_generation_batch_size 4 --per_device_training_batch_size 4 \
  --generation_batches 1 --ppo_epochs 1 --max_prompt_seq_len 256 --max_answer_seq_len 256 \
  --actor_learning_rate 9.65e-6 --critic_learning_rate 5e-6 --gradient_accumulation_steps 2 --num_warmup_steps 100 \
  --actor_lora_dim 128 --actor_gradient_checkpointing --actor_dropout 0.0 --actor_zero_stage "$ZERO_STAGE" \
  --critic_zero_stage "$ZERO_STAGE" --save_interval 100 "$@"
summarize
