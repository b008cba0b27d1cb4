#!/usr/bin/env bash
# Step 2 only: DeepSpeed-Chat's OPT-350m reward model on its four datasets, on several nodes.
# Two nodes of 8 GPUs with 16 GB or more each give a global batch of 64 (4 pairs per GPU).
#   HOSTFILE=hostfile bash training_scripts/opt/multi_node/run_350m.sh [extra flags]
#   sbatch --nodes 2 training_scripts/slurm/launch.sbatch training_scripts/opt/multi_node/run_350m.sh [extra flags]
# Overrides: MODEL, DATA, OUTPUT, ZERO_STAGE, NUM_GPUS, HOSTFILE (see training_scripts/common.sh).
source "$(dirname "${BASH_SOURCE[0]}")/../../common.sh"
: "${MODEL:=facebook/opt-350m}" "${DATA:=$DSCHAT_DATA}" "${OUTPUT:=output/opt-350m-reward}" "${ZERO_STAGE:=0}"
prepare multi_node

dschat_reward_model "$OUTPUT" "$MODEL" --per_device_train_batch_size 4 \
  --per_device_eval_batch_size 4 "$@"
summarize
