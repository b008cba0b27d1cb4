#!/usr/bin/env bash
# Steps 1, 2 and 3: DeepSpeed-Chat's OPT-6.7b recipe on one node of 8 GPUs with 80 GB each (an estimate, not measured
# here). Step 1 fine-tunes OPT-6.7b on its four datasets (ZeRO-3, gradient checkpointing; global batch 48), step 2
# trains an OPT-350m reward model, and step 3 runs PPO on the 6.7b actor with a critic initialised from that reward
# model, both under ZeRO-3: the actor's weights are gathered once per rollout to generate, and its reference and the
# reward model are partitioned as it is. Each step takes its --data_split 2,4,4 share.
#   bash training_scripts/opt/single_node/run_6.7b.sh [extra flags for every step]
# Overrides: MODEL (the actor's base), REWARD_MODEL (the reward model's base), DATA, OUTPUT, ZERO_STAGE, NUM_GPUS (see
# training_scripts/common.sh). Each step's model and training.log land in OUTPUT/step{1_sft,2_reward_model,3_rlhf}.
source "$(dirname "${BASH_SOURCE[0]}")/../../common.sh"
: "${MODEL:=facebook/opt-6.7b}" "${REWARD_MODEL:=facebook/opt-350m}" "${DATA:=$DSCHAT_DATA}"
: "${OUTPUT:=output/opt-6.7b-rlhf}" "${ZERO_STAGE:=3}"
prepare

train sft "$OUTPUT/step1_sft" --model_name_or_path "$MODEL" --data_path "${DATA_SOURCES[@]}" --data_split 2,4,4 \
  --per_device_train_batch_size 6 --per_device_eval_batch_size 6 --max_seq_len 512 --learning_rate 9.65e-6 \
  --weight_decay 0.0 --num_train_epochs 16 --gradient_accumulation_steps 1 --lr_scheduler_type cosine \
  --num_warmup_steps 0 --seed 1234 --zero_stage "$ZERO_STAGE" --gradient_checkpointing --save_interval 500 "$@"
dschat_reward_model "$OUTPUT/step2_reward_model" "$REWARD_MODEL" "$@"
dschat_ppo --actor_learning_rate 9.65e-6 --actor_weight_decay 0.1 --critic_weight_decay 0.1 \
  --actor_gradient_checkpointing --zero3_generation gather "$@"
summarize
