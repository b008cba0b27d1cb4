#!/usr/bin/env bash
# Step 2 only: DeepSpeed-Chat's OPT-350m reward model on Dahoas/rm-static, on one GPU (16 GB or more is plenty).
# Override with the environment: MODEL, DATA, OUTPUT, ZERO_STAGE. Extra arguments are passed to the trainer.
#   bash training_scripts/opt/single_gpu/run_350m.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
MODEL=${MODEL:-facebook/opt-350m}
DATA=${DATA:-Dahoas/rm-static}
OUTPUT=${OUTPUT:-$ROOT/output/opt-350m-reward}
ZERO_STAGE=${ZERO_STAGE:-0}
mkdir -p "$OUTPUT"

deepspeed --num_gpus 1 "$ROOT/training/step2_reward_model_finetuning/main.py" \
  --model_name_or_path "$MODEL" --data_path $DATA --num_padding_at_beginning 1 \
  --learning_rate 5e-5 --weight_decay 0.1 --num_train_epochs 1 --dropout 0.0 --gradient_accumulation_steps 4 \
  --zero_stage "$ZERO_STAGE" --enable_tensorboard --tensorboard_path "$OUTPUT" --deepspeed --output_dir "$OUTPUT" \
  "$@" 2>&1 | tee "$OUTPUT/training.log"
