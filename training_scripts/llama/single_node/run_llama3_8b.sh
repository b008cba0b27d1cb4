#!/usr/bin/env bash
# Step 2 only: RLHF-Workflow's Bradley-Terry reward model on Llama-3-8B-Instruct. One node of 8 GPUs with 80 GB each
# (bf16, ZeRO-3, gradient checkpointing). The tokenizer's chat template formats each conversation (--template chat,
# the template's BOS kept once); Llama 3 has no pad token, so a dedicated one is added (pad = EOS would hide the
# scored EOS). lr 2e-6, 1 epoch, global batch 512: 1 pair per GPU and 64 accumulation steps on 8 GPUs.
#   bash training_scripts/llama/single_node/run_llama3_8b.sh [extra flags]
# Overrides: MODEL, DATA, OUTPUT, ZERO_STAGE, NUM_GPUS (see training_scripts/common.sh). With other than 8 GPUs,
# set --gradient_accumulation_steps to keep the global batch at 512.
source "$(dirname "${BASH_SOURCE[0]}")/../../common.sh"
: "${MODEL:=meta-llama/Meta-Llama-3-8B-Instruct}" "${DATA:=hendrydong/preference_700K}"
: "${OUTPUT:=output/llama3-8b-reward}" "${ZERO_STAGE:=3}"
prepare

train reward "$OUTPUT" --model_name_or_path "$MODEL" --data_path "${DATA_SOURCES[@]}" --data_split 0,1,0 \
  --eval_fraction 0.01 --template chat --max_seq_len 4096 --dtype bf16 --zero_stage "$ZERO_STAGE" \
  --gradient_checkpointing --per_device_train_batch_size 1 --per_device_eval_batch_size 4 \
  --gradient_accumulation_steps 64 --learning_rate 2e-6 --weight_decay 0.0 --num_train_epochs 1 \
  --lr_scheduler_type cosine --num_warmup_steps 40 --seed 1234 --save_interval 100 "$@"
summarize
