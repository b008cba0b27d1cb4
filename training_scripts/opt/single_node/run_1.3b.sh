#!/usr/bin/env bash
# Steps 1, 2 and 3: DeepSpeed-Chat's OPT-1.3b recipe on one node of 8 GPUs with 40 GB or more each (an estimate, not
# measured here). Step 1 fine-tunes OPT-1.3b on its four datasets (global batch 64), step 2 trains an OPT-350m reward
# model, and step 3 runs PPO on the 1.3b actor with a critic initialised from that reward model, all under ZeRO-2,
# each on its --data_split 2,4,4 share.
#   bash training_scripts/opt/single_node/run_1.3b.sh [extra flags for every step]
# Overrides: MODEL (the actor's base), REWARD_MODEL (the reward model's base), DATA, OUTPUT, ZERO_STAGE, NUM_GPUS (see
# training_scripts/common.sh). Each step's model and training.log land in OUTPUT/step{1_sft,2_reward_model,3_rlhf}.
source "$(dirname "${BASH_SOURCE[0]}")/../../common.sh"
: "${MODEL:=facebook/opt-1.3b}" "${REWARD_MODEL:=facebook/opt-350m}" "${DATA:=$DSCHAT_DATA}"
: "${OUTPUT:=output/opt-1.3b-rlhf}" "${ZERO_STAGE:=2}"
prepare

train sft "$OUTPUT/step1_sft" --model_name_or_path "$MODEL" --data_path "${DATA_SOURCES[@]}" --data_split 2,4,4 \
  --per_device_train_batch_size 8 --per_device_eval_batch_size 8 --max_seq_len 512 --learning_rate 9.65e-6 \
  --weight_decay 0.0 --num_train_epochs 16 --gradient_accumulation_steps 1 --lr_scheduler_type cosine \
  --num_warmup_steps 0 --seed 1234 --zero_stage "$ZERO_STAGE" --save_interval 500 "$@"
dschat_reward_model "$OUTPUT/step2_reward_model" "$REWARD_MODEL" "$@"
dschat_ppo --actor_learning_rate 9.65e-6 "$@"
summarize
