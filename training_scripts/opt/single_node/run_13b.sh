#!/usr/bin/env bash
# Step 1 only: DeepSpeed-Chat's OPT-13b supervised fine-tuning on its four datasets (the step-1 share of
# --data_split 2,4,4), with rank-128 LoRA adapters on the decoder layers at lr 1e-4 (every weight trains, as in
# DeepSpeed-Chat; add --only_optimize_lora to train the adapters alone). One node of 8 GPUs with 80 GB each (ZeRO-3,
# gradient checkpointing; add --offload on 40 GB); global batch 32. The export merges the adapters in.
#   bash training_scripts/opt/single_node/run_13b.sh [extra flags]
# Overrides: MODEL, DATA, OUTPUT, ZERO_STAGE, NUM_GPUS (see training_scripts/common.sh).
source "$(dirname "${BASH_SOURCE[0]}")/../../common.sh"
: "${MODEL:=facebook/opt-13b}" "${DATA:=$DSCHAT_DATA}" "${OUTPUT:=output/opt-13b-sft}" "${ZERO_STAGE:=3}"
prepare

train sft "$OUTPUT" --model_name_or_path "$MODEL" --data_path "${DATA_SOURCES[@]}" --data_split 2,4,4 \
  --per_device_train_batch_size 4 --per_device_eval_batch_size 4 --max_seq_len 512 --learning_rate 1e-4 \
  --weight_decay 0.1 --num_train_epochs 2 --gradient_accumulation_steps 1 --lr_scheduler_type cosine \
  --num_warmup_steps 0 --seed 1234 --zero_stage "$ZERO_STAGE" --gradient_checkpointing --lora_dim 128 \
  --lora_module_name decoder.layers. --save_interval 500 "$@"
summarize
