#!/usr/bin/env bash
# Step 2 only: DeepSpeed-Chat's OPT-350m reward model on Dahoas/rm-static. One GPU with 16 GB or more; global batch 64.
#   bash training_scripts/opt/single_gpu/run_350m.sh [extra flags]
# Overrides: MODEL, DATA, OUTPUT, ZERO_STAGE (see training_scripts/common.sh). The model and training.log land in OUTPUT.
source "$(dirname "${BASH_SOURCE[0]}")/../../common.sh"
: "${MODEL:=facebook/opt-350m}" "${DATA:=Dahoas/rm-static}" "${OUTPUT:=output/opt-350m-reward}"
: "${ZERO_STAGE:=0}" "${NUM_GPUS:=1}"
prepare

train reward "$OUTPUT" --model_name_or_path "$MODEL" --data_path "${DATA_SOURCES[@]}" --num_padding_at_beginning 1 \
  --per_device_train_batch_size 16 --per_device_eval_batch_size 16 --max_seq_len 512 --learning_rate 5e-5 \
  --weight_decay 0.1 --num_train_epochs 1 --dropout 0.0 --gradient_accumulation_steps 4 --lr_scheduler_type cosine \
  --num_warmup_steps 0 --seed 1234 --zero_stage "$ZERO_STAGE" --save_interval 500 "$@"
summarize
