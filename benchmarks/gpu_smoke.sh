#!/usr/bin/env bash
# Step 2 on a GPU: plain python and the deepspeed launcher, bf16 and fp16, ZeRO 0 and 3, then pipeline parity of the
# export, and one OPT-350m-shaped model (random weights) for a throughput figure. Usage: bash benchmarks/gpu_smoke.sh OUT
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_smoke}
PY=${PY:-python3}
STEP2=training/step2_reward_model_finetuning/main.py
mkdir -p "$OUT"
COMMON=(--data_path synthetic:3000 --data_split 0,1,0 --max_seq_len 128 --per_device_train_batch_size 16
        --per_device_eval_batch_size 64 --learning_rate 2e-3 --num_warmup_steps 20 --dropout 0.0)

"$PY" -m utils.models.tiny "$OUT/tiny" --family opt
"$PY" -m utils.models.tiny "$OUT/tiny_llama" --family llama
"$PY" -m utils.models.tiny "$OUT/opt350m_shaped" --family opt --hidden 1024 --layers 24 --heads 16

run() {
  local name=$1 start=$SECONDS; shift
  "$@" > "$OUT/$name.log" 2>&1 || { tail -40 "$OUT/$name.log"; exit 1; }
  echo "$name: $(grep -h "^accuracy=" "$OUT/$name.log" | tail -1), wall $((SECONDS - start)) s"
}

run python_bf16_zero0 "$PY" $STEP2 --model_name_or_path "$OUT/tiny" "${COMMON[@]}" --dtype bf16 --zero_stage 0 \
    --output_dir "$OUT/python_bf16_zero0"
run python_fp16_zero2 "$PY" $STEP2 --model_name_or_path "$OUT/tiny_llama" "${COMMON[@]}" --zero_stage 2 \
    --output_dir "$OUT/python_fp16_zero2"
run launcher_bf16_zero3 deepspeed --num_gpus 1 $STEP2 --model_name_or_path "$OUT/tiny" "${COMMON[@]}" --dtype bf16 \
    --zero_stage 3 --output_dir "$OUT/launcher_bf16_zero3"
run torchrun_fp32_zero1 torchrun --nproc_per_node 1 $STEP2 --model_name_or_path "$OUT/tiny" "${COMMON[@]}" \
    --dtype fp32 --zero_stage 1 --output_dir "$OUT/torchrun_fp32_zero1"
run opt350m_shaped_bf16 "$PY" $STEP2 --model_name_or_path "$OUT/opt350m_shaped" --data_path synthetic:4000 \
    --data_split 0,1,0 --max_seq_len 128 --per_device_train_batch_size 32 --per_device_eval_batch_size 64 \
    --learning_rate 5e-5 --dtype bf16 --zero_stage 2 --gradient_checkpointing --output_dir "$OUT/opt350m_shaped_bf16"

# The fp32 export, reloaded through pipeline() on the GPU, reproduces the trainer's final evaluation.
"$PY" - "$OUT/torchrun_fp32_zero1" <<'PYEOF'
import json, sys, torch
from transformers import pipeline
from utils.data.splits import read_source
from utils.data.formatting import format_text
from utils.objectives.metrics import pair_metrics
out = sys.argv[1]
rows = read_source("synthetic:3000")[1]
pipe = pipeline("text-classification", model=out, function_to_apply="none", device=0)
texts = [format_text(r["prompt"], r[k], "dschat") for k in ("chosen", "rejected") for r in rows]
scores = torch.tensor([o["score"] for o in pipe(texts, batch_size=64)], dtype=torch.float64)
again = pair_metrics(*scores.chunk(2))
final = json.loads(open(f"{out}/eval_results.json").read())
diffs = {k: abs(again[k] - final[k]) for k in ("accuracy", "chosen_mean", "rejected_mean", "loss")}
print("pipeline parity on GPU, max |diff|:", max(diffs.values()), diffs)
assert max(diffs.values()) < 1e-4
PYEOF
"$PY" - "$OUT/opt350m_shaped_bf16" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(f"{sys.argv[1]}/metrics.jsonl")]
train = [r for r in rows if r["split"] == "train"]
steps = len(train); secs = train[-1]["elapsed_s"] - train[9]["elapsed_s"]
print(f"opt-350m-shaped bf16 ZeRO-2 + grad ckpt: {(steps - 10) * 32 / secs:.1f} pairs/s after warm-up "
      f"({steps} steps of 32 pairs)")
PYEOF
