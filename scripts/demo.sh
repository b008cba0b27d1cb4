#!/usr/bin/env bash
# The embedded demo, on CPU: a tiny OPT-style model with a tokenizer trained on the fly; step 1 fine-tunes it on the
# built-in synthetic prompts and chosen answers, prompt_eval shows its answers next to the untrained model's, and
# step 2 trains a reward model from the step-1 output. Its last line is accuracy=<held-out accuracy>.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-demo_output}
export DS_ACCELERATOR=${DS_ACCELERATOR:-cpu} HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
# Step 1 takes a quarter of the synthetic train rows and step 2 the rest; both evaluate on the held-out tenth.
DATA=(--data_path synthetic:4000 --data_split 1,3,0 --max_seq_len 128 --dropout 0.0 --dtype fp32 --zero_stage 0)

rm -rf "$OUT"
"$PY" -m utils.tiny_models "$OUT/base" --family opt
"$PY" training/step1_supervised_finetuning/main.py "${DATA[@]}" \
  --model_name_or_path "$OUT/base" \
  --per_device_train_batch_size 16 --per_device_eval_batch_size 64 \
  --learning_rate 2e-3 --weight_decay 0.0 --num_warmup_steps 10 --num_train_epochs 3 \
  --eval_interval 50 --output_dir "$OUT/step1_sft"
"$PY" training/step1_supervised_finetuning/prompt_eval.py \
  --model_name_or_path_baseline "$OUT/base" --model_name_or_path_finetune "$OUT/step1_sft" \
  --prompt "What is the capital of France?" --prompt "What is 3 plus 4?" --max_new_tokens 16
"$PY" training/step2_reward_model_finetuning/main.py "${DATA[@]}" \
  --model_name_or_path "$OUT/step1_sft" --num_padding_at_beginning 1 \
  --per_device_train_batch_size 16 --per_device_eval_batch_size 64 \
  --learning_rate 2e-3 --weight_decay 0.0 --num_warmup_steps 20 --num_train_epochs 2 \
  --eval_interval 100 --eval_iters 100 --output_dir "$OUT/step2_reward_model"
