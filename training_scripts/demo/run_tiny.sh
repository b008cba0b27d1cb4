#!/usr/bin/env bash
# The quickstart demo (`make demo`), on CPU in about 3 minutes on an idle 2-core host (docs/demo.md), through the
# same machinery as the GPU launchers:
# a tiny OPT-style model (2 layers, hidden 64, random weights, a tokenizer trained here) and the built-in synthetic
# data, split 2,4,1 between the three steps. Step 1 fine-tunes it on its share plus synthetic_flawed, whose answers
# are a quarter rude, evasive or looping, so that the policy has flaws to lose; prompt_eval.py shows its answers next
# to the untrained model's. Step 2 trains a reward model from the step-1 output, and rw_eval.py evaluates it on
# held-out pairs. Step 3 improves the step-1 policy with that reward model four times, by RLOO, RAFT, PPO and online
# DPO, on its own prompts, and once by offline DPO on step 2's pairs; after step 2, two runs at a time, on one thread
# each. Beside all of it, on a third lane, GRPO learns arithmetic from a checkable reward alone (math_answer, no
# reward model), from a warm start fine-tuned on synthetic_math. The last lines sum up, with a
# before/ONLINE_DPO/PPO/RAFT/RLOO/GRPO table; OUTPUT/training_curves.png shows the losses and step 3's rewards.
#   bash training_scripts/demo/run_tiny.sh [extra flags for every step]
# Overrides: MODEL (default: the tiny model, built into OUTPUT/base), DATA, OUTPUT, ZERO_STAGE, NUM_GPUS
# (processes; see training_scripts/common.sh).
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
export DS_ACCELERATOR=${DS_ACCELERATOR:-cpu} HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
# Idle torch threads sleep instead of spinning: the same figures, and beside another busy process on the host, the
# two threads of steps 1 and 2 ran 20 times faster than spinning.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
: "${DATA:=synthetic:4000}" "${OUTPUT:=demo_output}" "${ZERO_STAGE:=0}" "${NUM_GPUS:=1}"
# Step 3 of the demo, which run_seeds.sh reruns with other seeds. 288 optimizer steps each; PPO takes 2 passes over
# each rollout, so it samples half as many, and pays twice the KL weight per token: at 0.1 its answers narrowed to
# 0.63 of their starting distinct-2. RAFT has no KL term: at 1.5e-4 one seed of three collapsed, at 1e-4 the flaws
# fell barely 4x. Online DPO: 7 iterations of 64 prompts, 8 updates each, with RLHFlow's K = 4 and label smoothing
# 0.1, and beta 0.3: at 0.1 one seed of three learned loops behind a polite opener (docs/demo.md); only prompts whose
# best answer beats the worst by more than 8 (a flawed answer beside a good one) make a pair: learning the small gaps
# between good answers narrows them faster, and with 8 iterations one seed kept under 0.75 of its distinct-2. Each
# run is judged before and after on 768 held-out prompts from a larger synthetic draw's held-out tenth (74 to 89
# flawed answers before, over seeds 1234, 7 and 1): DATA's own tenth leaves only about 145 questions that step 3
# does not train on, too few to count the flaws by.
declare -A OWN=([rloo]="--num_train_epochs 4" [raft]="--num_train_epochs 4 --actor_learning_rate 1.25e-4"
                [ppo]="--num_train_epochs 2 --ppo_epochs 2 --critic_learning_rate 1e-4 --kl_ctl 0.2"
                [online_dpo]="--num_generations 4 --label_smoothing 0.1 --prompts_per_iteration 64 --num_iterations 7")
OWN[online_dpo]+=" --tie_threshold 8 --beta 0.3 --actor_learning_rate 2e-4 --lr_scheduler_type constant"

# GRPO on arithmetic (docs/demo.md), rewarded by math_answer alone: from its own warm start, OUTPUT/step1_math, 3
# epochs of the base model on synthetic_math:4000 answered "The answer is N.", GRPO trains on synthetic_math:8000 (the
# warm start's 4,000 problems and 4,000 new ones) and is judged on its held-out tenth, 800 problems that none of them
# repeats word for word (mostly word problems), by one seeded sample at the training temperature and by the greedy
# answer. At temperature 1.5 the warm start's samples are right a quarter of the time, its greedy answers almost two
# thirds: GRPO learns both to favour its best answer and to find the right one more often. K = 8 answers to 32
# prompts per rollout, two passes over each. The KL term holds the answers' form: without it the policy learned to
# hedge, as math_answer reads the last number ("The answer is 15 answer is 18."), and stopped ending its answers.
MATH_SFT=(--data_path synthetic_math:4000 --data_split 1,0,0 --max_seq_len 96 --learning_rate 3e-3
          --num_train_epochs 3 --num_warmup_steps 10)
MATH_RL=(--data_path synthetic_math:8000 --data_split 0,0,1 --reward_funcs math_answer --temperature 1.5
         --num_generations 8 --per_device_generation_batch_size 32 --per_device_training_batch_size 32
         --ppo_epochs 2 --kl_ctl 0.1 --actor_learning_rate 2e-3 --num_warmup_steps 10 --max_answer_seq_len 10
         --per_device_eval_batch_size 200 --eval_iters 4)

# demo_step3 OUT_DIR FLAGS...: one step-3 run per algorithm, into OUT_DIR/ALGO, two at a time (common.sh's `beside`):
# RLOO then PPO on lane 0, RAFT then online DPO on lane 1, which take about as long.
demo_step3() {
  local out=$1
  shift
  beside 0 _demo_algos "$out" "rloo ppo" "$@"
  beside 1 _demo_algos "$out" "raft online_dpo" "$@"
}

# demo_grpo OUT_DIR FLAGS...: GRPO on lane 2, from OUTPUT/step1_math, into OUT_DIR/grpo. It is the longest lane:
# three single-threaded lanes share two cores, and lanes 0 and 1 yield to it (nice 3), so that all three end together
# (about 30 s sooner than at an equal share, on the 2-core host of docs/demo.md).
LANE_NICENESS=([0]=3 [1]=3)
demo_grpo() {
  beside 2 _demo_grpo "$@"
}

_demo_grpo() {
  local out=$1
  shift
  train rlhf "$out/grpo" --algo grpo --actor_model_name_or_path "$OUTPUT/step1_math" "${MATH_RL[@]}" --dtype fp32 \
    --actor_zero_stage "$ZERO_STAGE" --max_prompt_seq_len 64 --actor_weight_decay 0.0 --actor_dropout 0.0 "$@"
}

# _demo_math FLAGS...: the math warm start, then GRPO from it into OUTPUT/step3_rlhf/grpo.
_demo_math() {
  train sft "$OUTPUT/step1_math" --model_name_or_path "$MODEL" "${MATH_SFT[@]}" --dropout 0.0 --dtype fp32 \
    --zero_stage "$ZERO_STAGE" --per_device_train_batch_size 16 --per_device_eval_batch_size 64 --weight_decay 0.0 "$@"
  _demo_grpo "$OUTPUT/step3_rlhf" "$@"
}

# _demo_algos OUT_DIR "ALGO..." FLAGS...: one lane's runs, one after the other.
_demo_algos() {
  local out=$1 algos algo own
  read -ra algos <<< "$2"
  shift 2
  for algo in "${algos[@]}"; do
    read -ra own <<< "${OWN[$algo]}"
    train rlhf "$out/$algo" --algo "$algo" --actor_model_name_or_path "$OUTPUT/step1_sft" \
      --critic_model_name_or_path "$OUTPUT/step2_reward_model" \
      --data_path "${DATA_SOURCES[@]}" --data_split 2,4,1 --dtype fp32 --actor_zero_stage "$ZERO_STAGE" \
      --num_generations 4 --per_device_generation_batch_size 8 --per_device_training_batch_size 8 \
      --max_prompt_seq_len 64 --max_answer_seq_len 32 --actor_learning_rate 1.5e-4 --actor_weight_decay 0.0 \
      --actor_dropout 0.0 --eval_data_path synthetic:30000 --per_device_eval_batch_size 128 --eval_iters 6 \
      --judge synthetic "${own[@]}" "$@"
  done
}
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0  # sourced (run_seeds.sh): the definitions alone

prepare
if [ -z "${MODEL:-}" ]; then
  MODEL=$OUTPUT/base
  [ -e "$MODEL/config.json" ] || run "$OUTPUT/base.log" "$PYTHON" -m utils.models.tiny "$MODEL" --family opt
fi
BOTH=(--data_path "${DATA_SOURCES[@]}" --data_split 2,4,1 --max_seq_len 128 --dropout 0.0 --dtype fp32
      --zero_stage "$ZERO_STAGE" --per_device_train_batch_size 16 --per_device_eval_batch_size 64 --weight_decay 0.0
      --learning_rate 2e-3)
# The math warm start and GRPO on lane 2, one thread, from here on: beside steps 1 and 2, which keep their own
# thread count (and so their figures) and leave most of the second core idle, then beside the other lanes.
beside 2 _demo_math "$@"

train sft "$OUTPUT/step1_sft" --model_name_or_path "$MODEL" "${BOTH[@]}" --sft_only_data_path synthetic_flawed:3000 \
  --num_warmup_steps 10 --num_train_epochs 3 --eval_interval 200 "$@"
run "$OUTPUT/step1_sft/prompt_eval.log" "$PYTHON" "$ROOT/training/step1_supervised_finetuning/prompt_eval.py" \
  --model_name_or_path_baseline "$MODEL" --model_name_or_path_finetune "$OUTPUT/step1_sft" \
  --prompt "What is the capital of France?" --prompt "What is 3 plus 4?" --max_new_tokens 16
train reward "$OUTPUT/step2_reward_model" --model_name_or_path "$OUTPUT/step1_sft" "${BOTH[@]}" \
  --num_padding_at_beginning 1 --num_warmup_steps 20 --num_train_epochs 2 --eval_interval 100 "$@"
# From here on two runs at a time, each on one thread, which keeps up with the tiny model (RLOO took 62 s beside RAFT,
# about as long as alone on two threads; of the figures, only PPO's last digits moved). Steps 1 and 2 run alone on
# every core: their models are every step-3 run's start, and on one thread their last bits moved, and with them step
# 3's path: online DPO looped (docs/demo.md). rw_eval.py and offline DPO go on lane 1, before and after its runs.
beside 1 run "$OUTPUT/rw_eval/rw_eval.log" "$PYTHON" "$ROOT/rw_eval.py" \
  --model_name_or_path "$OUTPUT/step2_reward_model" --data_path "${DATA_SOURCES[@]}" \
  --output "$OUTPUT/rw_eval/eval.json" --plot "$OUTPUT/rw_eval/reward_histogram.png" --check_pipeline
demo_step3 "$OUTPUT/step3_rlhf" "$@"
# Offline DPO on step 2's pairs, no reward model: its figure is the held-out preference accuracy.
beside 1 train rlhf "$OUTPUT/step3_dpo" --algo dpo --actor_model_name_or_path "$OUTPUT/step1_sft" \
  --data_path "${DATA_SOURCES[@]}" --data_split 2,4,1 --max_seq_len 128 --dtype fp32 --actor_zero_stage "$ZERO_STAGE" \
  --per_device_training_batch_size 32 --per_device_eval_batch_size 64 --eval_iters 7 --actor_learning_rate 2e-4 \
  --actor_weight_decay 0.0 --actor_dropout 0.0 --beta 0.1 "$@"
settle
summarize
