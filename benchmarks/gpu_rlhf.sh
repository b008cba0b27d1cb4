#!/usr/bin/env bash
# Step 3 on one GPU: PPO with an OPT-1.3b-shaped actor and an OPT-350m-shaped reward model and critic (random
# weights), bf16, prompts of 256 tokens and answers of up to 256, K = 4 answers per prompt, 8 prompts per step; under
# ZeRO-2, then under ZeRO-3 with the actor gathered once per rollout to generate, and kept partitioned. Prints and
# writes OUT/report.md: answers per second, generation's share of the step time, the peak GPU memory, and the
# weights each model holds.
#   bash benchmarks/gpu_rlhf.sh OUT        # on a GPU
#   bash benchmarks/gpu_rlhf.sh OUT cpu    # the same runs with tiny shapes and lengths on CPU, to check the script
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_rlhf}
MODE=${2:-gpu}
PY=${PY:-python3}
mkdir -p "$OUT"
if [ "$MODE" = cpu ]; then
  export DS_ACCELERATOR=cpu
  ACTOR=(--hidden 64 --layers 2 --heads 4) REWARD=(--hidden 32 --layers 2 --heads 2)
  LENGTHS=(--max_prompt_seq_len 32 --max_answer_seq_len 16) DTYPE=fp32 PROMPTS=24
else
  ACTOR=(--hidden 2048 --layers 24 --heads 32) REWARD=(--hidden 1024 --layers 24 --heads 16)
  LENGTHS=(--max_prompt_seq_len 256 --max_answer_seq_len 256) DTYPE=bf16 PROMPTS=96
fi
"$PY" -m utils.models.tiny "$OUT/actor" --family opt "${ACTOR[@]}"
"$PY" -m utils.models.tiny "$OUT/reward" --family opt --reward "${REWARD[@]}"
# Prompts long enough to fill --max_prompt_seq_len, from the tiny tokenizer's own corpus.
"$PY" - "$OUT/prompts.jsonl" "$PROMPTS" <<'PYEOF'
import json, sys
from utils.models.tiny import synthetic_corpus
texts = synthetic_corpus(40 * int(sys.argv[2]))
with open(sys.argv[1], "w") as handle:
    for i in range(int(sys.argv[2])):
        handle.write(json.dumps({"prompt": " ".join(texts[40 * i:40 * i + 40])}) + "\n")
PYEOF

COMMON=(--algo ppo --actor_model_name_or_path "$OUT/actor" --critic_model_name_or_path "$OUT/reward"
        --data_path "$OUT/prompts.jsonl" --data_split 0,0,1 --eval_fraction 0.1 --eval_iters 1
        --per_device_eval_batch_size 4 --num_generations 4 --per_device_generation_batch_size 8
        --per_device_training_batch_size 8 "${LENGTHS[@]}" --dtype "$DTYPE" --actor_gradient_checkpointing
        --actor_learning_rate 1e-6 --critic_learning_rate 1e-6 --save_interval 0)
run() {
  local name=$1
  shift
  "$PY" training/step3_rlhf_finetuning/main.py "${COMMON[@]}" --output_dir "$OUT/$name" "$@" > "$OUT/$name.log" 2>&1 \
    || { tail -40 "$OUT/$name.log"; exit 1; }
}
run zero2 --actor_zero_stage 2 --critic_zero_stage 2
run zero3_gather --actor_zero_stage 3 --critic_zero_stage 3 --zero3_generation gather
run zero3_partitioned --actor_zero_stage 3 --critic_zero_stage 3 --zero3_generation partitioned

"$PY" - "$OUT" zero2 zero3_gather zero3_partitioned <<'PYEOF' | tee "$OUT/report.md"
import json, re, sys
import torch
out, runs = sys.argv[1], sys.argv[2:]
device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (shapes and lengths cut: a check, not a figure)"
print(f"step 3, PPO, K = 4, 8 prompts per step, on {device}\n")
print("| run | answers/s | generation share | peak GPU memory (GiB) | weights held (GiB) |")
print("|---|---|---|---|---|")
for name in runs:
    train = [r for r in map(json.loads, open(f"{out}/{name}/metrics.jsonl")) if r["split"] == "train"]
    timed = train[1:]  # the first step warms up
    seconds = sum(b["time"] - a["time"] for a, b in zip(train, timed))
    answers = len(timed) * 8 * 4
    share = sum(r["generate_s"] for r in timed) / seconds
    peak = f"{max(r['peak_memory_gib'] for r in timed):.1f}" if "peak_memory_gib" in timed[0] else "-"
    held = re.search(r"weights held by each process: (.*)", open(f"{out}/{name}.log").read()).group(1)
    print(f"| {name} | {answers / seconds:.2f} | {share:.0%} | {peak} | {held} |")
PYEOF
