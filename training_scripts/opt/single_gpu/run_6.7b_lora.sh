#!/usr/bin/env bash
# Step 1 only: DeepSpeed-Chat's OPT-6.7b supervised fine-tuning with LoRA on one GPU with 40 GB or more: rank-128
# adapters on the decoder layers, trained alone at lr 1e-3 (--only_optimize_lora, so the frozen 6.7B weights need no
# optimizer state), gradient checkpointing, global batch 128 (8 × 16 accumulation steps). The export merges the
# adapters into plain weights; --save_adapter keeps them too.
#   bash training_scripts/opt/single_gpu/run_6.7b_lora.sh [extra flags]
# Overrides: MODEL, DATA, OUTPUT, ZERO_STAGE (see training_scripts/common.sh).
source "$(dirname "${BASH_SOURCE[0]}")/../../common.sh"
: "${MODEL:=facebook/opt-6.7b}" "${DATA:=$DSCHAT_DATA}" "${OUTPUT:=output/opt-6.7b-sft-lora}" "${ZERO_STAGE:=0}"
: "${NUM_GPUS:=1}"
prepare

train sft "$OUTPUT" --model_name_or_path "$MODEL" --data_path "${DATA_SOURCES[@]}" --data_split 2,4,4 \
  --per_device_train_batch_size 8 --per_device_eval_batch_size 8 --max_seq_len 512 --learning_rate 1e-3 \
  --weight_decay 0.0 --num_train_epochs 16 --gradient_accumulation_steps 16 --lr_scheduler_type cosine \
  --num_warmup_steps 0 --seed 1234 --zero_stage "$ZERO_STAGE" --gradient_checkpointing --lora_dim 128 \
  --lora_module_name decoder.layers. --only_optimize_lora --lora_learning_rate 1e-3 --save_interval 500 "$@"
summarize
