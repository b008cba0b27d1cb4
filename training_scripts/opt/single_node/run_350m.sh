#!/usr/bin/env bash
# Step 2 only: DeepSpeed-Chat's OPT-350m reward model on its four datasets (the step-2 share of --data_split 2,4,4).
# One node of 8 GPUs with 16 GB or more each; global batch 64.
#   bash training_scripts/opt/single_node/run_350m.sh [extra flags]
# Overrides: MODEL, DATA, OUTPUT, ZERO_STAGE, NUM_GPUS (see training_scripts/common.sh).
source "$(dirname "${BASH_SOURCE[0]}")/../../common.sh"
: "${MODEL:=facebook/opt-350m}" "${DATA:=$DSCHAT_DATA}" "${OUTPUT:=output/opt-350m-reward}" "${ZERO_STAGE:=0}"
prepare

dschat_reward_model "$OUTPUT" "$MODEL" "$@"
summarize
