#!/usr/bin/env bash
# Step 1 only: DeepSpeed-Chat's OPT-6.7b supervised fine-tuning on its four datasets (the step-1 share of
# --data_split 2,4,4). One node of 8 GPUs with 80 GB each (ZeRO-3, gradient checkpointing); global batch 48.
#   bash training_scripts/opt/single_node/run_6.7b.sh [extra flags]
# Overrides: MODEL, DATA, OUTPUT, ZERO_STAGE, NUM_GPUS (see training_scripts/common.sh).
source "$(dirname "${BASH_SOURCE[0]}")/../../common.sh"
: "${MODEL:=facebook/opt-6.7b}" "${DATA:=$DSCHAT_DATA}" "${OUTPUT:=output/opt-6.7b-sft}" "${ZERO_STAGE:=3}"
prepare

train sft "$OUTPUT" --model_name_or_path "$MODEL" --data_path "${DATA_SOURCES[@]}" --data_split 2,4,4 \
  --per_device_train_batch_size 6 --per_device_eval_batch_size 6 --max_seq_len 512 --learning_rate 9.65e-6 \
  --weight_decay 0.0 --num_train_epochs 16 --gradient_accumulation_steps 1 --lr_scheduler_type cosine \
  --num_warmup_steps 0 --seed 1234 --zero_stage "$ZERO_STAGE" --gradient_checkpointing --save_interval 500 "$@"
summarize
