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

train sft "$OUTPUT/step1_sft" --model_name_or_path "$MODEL" --data_path "${DATA_SOURCES[@]}" --data_split 2,4,4 \
  --per_device_train_batch_size 8 --per_device_eval_batch_size 8 --max_seq_len 512 --learning_rate 9.65e-6 \
  --weight_decay 0.0 --num_train_epochs 1 --gradient_accumulation_steps 8 --lr_scheduler_type cosine \
  --num_warmup_steps 0 --seed 1234 --zero_stage "$ZERO_STAGE" --lora_dim 128 --gradient_checkpointing \
  --save_interval 500 "$@"
dschat_reward_model "$OUTPUT/step2_reward_model" "$REWARD_MODEL" --per_device_train_batch_size 16 \
  --per_device_eval_batch_size 16 --gradient_accumulation_steps 4 "$@"
dschat_ppo --actor_learning_rate 9.65e-6 --gradient_accumulation_steps 2 --actor_lora_dim 128 \
  --actor_gradient_checkpointing "$@"
summarize
