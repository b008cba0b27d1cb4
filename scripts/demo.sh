#!/usr/bin/env bash
# The embedded demo: a tiny OPT-style model with a tokenizer trained on the fly, a reward model trained on the
# built-in synthetic pairs, on CPU. Its last line is accuracy=<held-out accuracy>.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-demo_output}
export DS_ACCELERATOR=${DS_ACCELERATOR:-cpu} HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}

rm -rf "$OUT"
"$PY" -m utils.tiny_models "$OUT/base" --family opt
"$PY" training/step2_reward_model_finetuning/main.py \
  --model_name_or_path "$OUT/base" \
  --data_path synthetic:3000 --data_split 0,1,0 \
  --num_padding_at_beginning 1 \
  --per_device_train_batch_size 16 --per_device_eval_batch_size 64 \
  --max_seq_len 128 --learning_rate 2e-3 --weight_decay 0.0 --num_warmup_steps 20 \
  --num_train_epochs 2 --dropout 0.0 --dtype fp32 --zero_stage 0 \
  --eval_interval 100 --eval_iters 100 \
  --output_dir "$OUT/step2_reward_model"
