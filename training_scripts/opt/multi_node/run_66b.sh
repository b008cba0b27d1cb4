#!/usr/bin/env bash
# Steps 1, 2 and 3: DeepSpeed-Chat's OPT-66b recipe on several nodes. Step 1 fine-tunes OPT-66b on its four datasets
# with rank-128 LoRA adapters on the decoder layers at lr 1e-4 (every weight trains, as in DeepSpeed-Chat; add
# --only_optimize_lora to train the adapters alone); step 2 trains an OPT-350m reward model; step 3 runs PPO on the
# 66b actor (LoRA as in step 1, lr 5e-4) with a critic initialised from that reward model. All under ZeRO-3 with
# gradient checkpointing: step 3 generates with the actor partitioned (gathered layer by layer at every token), and
# its reference and the reward model are partitioned as the actor is. Four nodes of 8 GPUs with 80 GB each fit step 1
# (add --offload to fit fewer); step 3 also holds the 66b reference, and DeepSpeed-Chat ran it on eight (an estimate,
# not measured here). Each step takes its --data_split 2,4,4 share; 4 texts per GPU. The exports merge the adapters.
#   HOSTFILE=hostfile bash training_scripts/opt/multi_node/run_66b.sh [extra flags for every step]
#   sbatch --nodes 8 training_scripts/slurm/launch.sbatch training_scripts/opt/multi_node/run_66b.sh [extra flags]
# Overrides: MODEL (the actor's base), REWARD_MODEL (the reward model's base), DATA, OUTPUT, ZERO_STAGE, NUM_GPUS,
# HOSTFILE (see training_scripts/common.sh). Each step's model and training.log land in
# OUTPUT/step{1_sft,2_reward_model,3_rlhf}.
source "$(dirname "${BASH_SOURCE[0]}")/../../common.sh"
: "${MODEL:=facebook/opt-66b}" "${REWARD_MODEL:=facebook/opt-350m}" "${DATA:=$DSCHAT_DATA}"
: "${OUTPUT:=output/opt-66b-rlhf}" "${ZERO_STAGE:=3}"
prepare multi_node

train sft "$OUTPUT/step1_sft" --model_name_or_path "$MODEL" --data_path "${DATA_SOURCES[@]}" --data_split 2,4,4 \
  --per_device_train_batch_size 4 --per_device_eval_batch_size 4 --max_seq_len 512 --learning_rate 1e-4 \
  --weight_decay 0.1 --num_train_epochs 2 --gradient_accumulation_steps 1 --lr_scheduler_type cosine \
  --num_warmup_steps 0 --seed 1234 --zero_stage "$ZERO_STAGE" --gradient_checkpointing --lora_dim 128 \
  --lora_module_name decoder.layers. --save_interval 200 "$@"
dschat_reward_model "$OUTPUT/step2_reward_model" "$REWARD_MODEL" --per_device_train_batch_size 4 \
  --per_device_eval_batch_size 4 "$@"
dschat_ppo --actor_learning_rate 5e-4 --actor_weight_decay 0.1 --critic_weight_decay 0.1 \
  --actor_gradient_checkpointing --actor_lora_dim 128 --actor_lora_module_name decoder.layers. \
  --zero3_generation partitioned "$@"
summarize
