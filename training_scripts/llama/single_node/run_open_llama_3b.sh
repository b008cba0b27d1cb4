#!/usr/bin/env bash
# Steps 1 and 2: LMFlow's HH-RLHF reward-model recipe on open_llama_3b, bf16, no LoRA, with LMFlow's
# ###Human:/###Assistant: template (--template lmflow). One node of 8 GPUs with 40 GB or more each (ZeRO-2).
#   step 1: SFT on the train split's prompts and chosen answers, 2 epochs at lr 2e-5, the texts concatenated and cut
#           into 1024-token blocks (--packing);
#   step 2: the reward model from the step-1 output, trained on train plus the first 6,275 test pairs and evaluated
#           on the other 6,226, 1 epoch at lr 5e-6 with linear decay; pairs over 512 tokens are dropped.
# LMFlow's published result for this recipe: eval loss 0.5, accuracy 75.48%.
#   bash training_scripts/llama/single_node/run_open_llama_3b.sh [extra flags for both steps]
# Overrides: MODEL, DATA, OUTPUT, ZERO_STAGE, NUM_GPUS (see training_scripts/common.sh). The step-1 model lands in
# OUTPUT/step1_sft, the reward model in OUTPUT/step2_reward_model.
source "$(dirname "${BASH_SOURCE[0]}")/../../common.sh"
: "${MODEL:=openlm-research/open_llama_3b}" "${DATA:=Dahoas/full-hh-rlhf}" "${OUTPUT:=output/open_llama_3b-hh-rlhf}"
: "${ZERO_STAGE:=2}"
prepare
BOTH=(--data_path "${DATA_SOURCES[@]}" --template lmflow --dtype bf16 --zero_stage "$ZERO_STAGE" --seed 1234
      --lr_scheduler_type linear --num_warmup_steps 0 --weight_decay 0.0 --save_interval 500)

train sft "$OUTPUT/step1_sft" --model_name_or_path "$MODEL" "${BOTH[@]}" --data_split 1,0,0 --packing \
  --max_seq_len 1024 --per_device_train_batch_size 4 --per_device_eval_batch_size 4 --learning_rate 2e-5 \
  --num_train_epochs 2 "$@"
train reward "$OUTPUT/step2_reward_model" --model_name_or_path "$OUTPUT/step1_sft" "${BOTH[@]}" --data_split 0,1,0 \
  --train_split "train+test[:6275]" --eval_split "test[6275:]" --max_seq_len 512 --overlength drop \
  --per_device_train_batch_size 4 --per_device_eval_batch_size 8 --learning_rate 5e-6 --num_train_epochs 1 "$@"
summarize
