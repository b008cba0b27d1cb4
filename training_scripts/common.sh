# Sourced by every launcher in training_scripts/, so that they all behave alike:
# - overrides come from the environment: MODEL, REWARD_MODEL (a step-3 launcher's reward model, or the base it trains
#   one from), DATA (one or more sources, space-separated), OUTPUT (the run directory), ZERO_STAGE,
#   NUM_GPUS (per node; unset: every GPU the node has) and HOSTFILE (a DeepSpeed hostfile);
# - inputs are checked before any process starts, and a missing one stops the launcher with one line (status 2);
# - every step writes its model and its training.log into the run directory, OUTPUT;
# - a rerun resumes: each step gets --resume, so it continues from its last checkpoint, and a finished step is
#   skipped;
# - DRY_RUN=1 prints each command, exactly as it would run, instead of running it;
# - arguments given to a launcher are appended to each training command, so they override its flags; SFT_FLAGS,
#   REWARD_FLAGS and RLHF_FLAGS (space-separated) go to step 1's, step 2's or step 3's commands alone, after them.
# Processes start through `deepspeed` (this node, or the nodes of HOSTFILE), or through `srun` inside a SLURM job
# (LAUNCHER=srun, which training_scripts/slurm/launch.sbatch sets).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
DRY_RUN=${DRY_RUN:-0}
# DeepSpeed-Chat's four preference datasets, the default DATA of its OPT recipes.
DSCHAT_DATA="Dahoas/rm-static Dahoas/full-hh-rlhf Dahoas/synthetic-instruct-gptj-pairwise yitingxie/rlhf-reward-datasets"

die() {
  echo "error: $*" >&2
  exit 2
}

# Whether a source or model name can only mean a local path (a hub name is neither absolute nor a file name).
_looks_local() {
  case "$1" in
    /* | ./* | ../* | "~"* | *.jsonl | *.json | *.csv | *.parquet | *.gz) return 0 ;;
    *) return 1 ;;
  esac
}

_check_inputs() {
  local name
  for name in MODEL REWARD_MODEL; do
    if [ -n "${!name:-}" ] && _looks_local "${!name}" && [ ! -d "${!name}" ]; then
      die "$name=${!name}: no such directory (give a local model directory or a hub name such as facebook/opt-350m)"
    fi
  done
  read -ra DATA_SOURCES <<< "${DATA:-}"
  [ "${#DATA_SOURCES[@]}" -gt 0 ] || die "DATA is empty: give one or more sources, space-separated"
  local source
  for source in "${DATA_SOURCES[@]}"; do
    if _looks_local "$source" && [ ! -e "$source" ]; then
      die "DATA: $source: no such file or folder (give local data files, a dataset name, or synthetic)"
    fi
  done
  [[ "${ZERO_STAGE:-}" =~ ^[0-3]$ ]] || die "ZERO_STAGE=${ZERO_STAGE:-}: use 0, 1, 2 or 3"
  [ -z "${NUM_GPUS:-}" ] || [[ "$NUM_GPUS" =~ ^[1-9][0-9]*$ ]] || die "NUM_GPUS=$NUM_GPUS: give the GPUs per node, 1 or more"
  [ -z "${HOSTFILE:-}" ] || [ -f "$HOSTFILE" ] || die "HOSTFILE=$HOSTFILE: no such file"
}

# LAUNCH: the command that starts one training process per GPU on every node; a script path and its flags follow.
_launch_command() {
  case "${LAUNCHER:-deepspeed}" in
    deepspeed)
      [ "$DRY_RUN" = 1 ] || command -v deepspeed > /dev/null \
        || die "deepspeed is not on PATH: activate the environment that has requirements.txt installed"
      LAUNCH=(deepspeed --master_port "${MASTER_PORT:-29500}")
      [ -z "${NUM_GPUS:-}" ] || LAUNCH+=(--num_gpus "$NUM_GPUS")
      if [ -n "${HOSTFILE:-}" ]; then
        local hosts
        hosts=$(awk '!/^[[:space:]]*(#|$)/ {print $1}' "$HOSTFILE")
        [ -n "$hosts" ] || die "HOSTFILE=$HOSTFILE lists no hosts: write one 'HOST slots=GPUS' line per node"
        LAUNCH+=(--hostfile "$HOSTFILE" --master_addr "${MASTER_ADDR:-$(head -n 1 <<< "$hosts")}")
        # DeepSpeed runs a one-host hostfile here, without ssh; only several hosts need passwordless ssh (pdsh).
        [ "$(wc -l <<< "$hosts")" -gt 1 ] || LAUNCH+=(--no_ssh_check)
      fi
      ;;
    srun)
      : "${MASTER_ADDR:?LAUNCHER=srun runs inside training_scripts/slurm/launch.sbatch, which sets MASTER_ADDR}"
      LAUNCH=(env "MASTER_ADDR=$MASTER_ADDR" "MASTER_PORT=$MASTER_PORT" srun --nodes "$SLURM_JOB_NUM_NODES"
              --ntasks-per-node "$NUM_GPUS" --kill-on-bad-exit=1 bash "$ROOT/training_scripts/slurm/task.sh"
              "$PYTHON" -u)
      ;;
    *) die "LAUNCHER=$LAUNCHER: use deepspeed or srun" ;;
  esac
}

# prepare [multi_node]: check the overrides and build LAUNCH; call it once the launcher has set its defaults.
prepare() {
  _check_inputs
  if [ "${1:-}" = multi_node ] && [ "${LAUNCHER:-deepspeed}" = deepspeed ] && [ -z "${HOSTFILE:-}" ]; then
    die "this launcher runs on several nodes: set HOSTFILE to a DeepSpeed hostfile, or submit it with" \
        "sbatch training_scripts/slurm/launch.sbatch $0"
  fi
  OUTPUT=$(realpath -m "$OUTPUT")
  _launch_command
}

# The command as one line that a shell reads back into the same words; words that need it are single-quoted.
_quoted() {
  local word line=()
  for word in "$@"; do
    if [[ "$word" =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then line+=("$word"); else line+=("${word@Q}"); fi
  done
  echo "${line[*]}"
}

# run LOG COMMAND...: print the command (DRY_RUN=1), or run it with its output on the console and appended to LOG.
run() {
  local log=$1
  shift
  if [ "$DRY_RUN" = 1 ]; then
    _quoted "$@"
    return
  fi
  mkdir -p "$(dirname "$log")"
  printf '\n# %s\n%s\n' "$(date '+%F %T')" "$(_quoted "$@")" >> "$log"
  if [ -n "${LANE:-}" ]; then  # beside another run: the console gets one line as it starts and one as it ends
    local name=${log#"$PWD"/} start=$SECONDS
    echo "[lane $LANE] started: $name"
    "$@" >> "$log" 2>&1 || { echo "error: [lane $LANE] failed (status $?): see $name" >&2; return 1; }
    echo "[lane $LANE] done in $((SECONDS - start)) s: $name: $(grep -v '^\[' "$log" | tail -n 1)"  # not DeepSpeed's
    return
  fi
  # tee ignores the signals meant for training, so that a preempted run can still write its last lines.
  "$@" 2>&1 | (trap '' INT TERM USR1; exec tee -a "$log")
}

# Runs beside one another, for a host whose cores one small run cannot keep busy (the demo's):
# beside LANE COMMAND... runs COMMAND (`run`, `train`, or a function calling them) in the background as lane LANE
# (0 to 9), on one thread (OMP_NUM_THREADS=1) and at port MASTER_PORT + LANE, so that two lanes' launchers do not
# collide; its output goes to its logs only. A lane runs its commands one after another: a command for a busy lane
# waits for the last one first. A failed run stops the launcher, naming its log, once the other lanes' runs have
# ended; none starts after it. With DRY_RUN=1 each command prints, with its lane's port, and nothing runs.
# LANE_NICENESS[LANE], where a launcher sets it, runs that lane at a lower priority (nice): with more lanes than
# cores, the lanes that would otherwise wait on a longer one give it their share of the CPU, and all end together.
LANE_PIDS=()
declare -A LANE_NICENESS=()
beside() {
  local lane=$1
  shift
  [[ "$lane" =~ ^[0-9]$ ]] || die "beside: lane $lane: use 0 to 9"
  settle "$lane"
  local port=$((${MASTER_PORT:-29500} + lane))
  if [ "$DRY_RUN" = 1 ]; then
    (MASTER_PORT=$port; _launch_command; "$@")
    return
  fi
  (
    MASTER_PORT=$port LANE=$lane
    _launch_command
    export OMP_NUM_THREADS=1
    [ -z "${LANE_NICENESS[$lane]:-}" ] || renice -n "${LANE_NICENESS[$lane]}" -p "$BASHPID" > /dev/null
    "$@"
  ) &
  LANE_PIDS[lane]=$!
}

# settle [LANE]: wait for that lane's run, or for every lane's; a lane whose run has ended is settled too.
settle() {
  local lane failed=0
  for lane in "${!LANE_PIDS[@]}"; do
    if [ $# = 0 ] || [ "$lane" = "$1" ] || ! kill -0 "${LANE_PIDS[lane]}" 2> /dev/null; then
      wait "${LANE_PIDS[lane]}" || failed=1
      unset "LANE_PIDS[lane]"
    fi
  done
  [ "$failed" = 0 ] && return
  for lane in "${!LANE_PIDS[@]}"; do wait "${LANE_PIDS[lane]}" || true; done
  echo "error: a run in the background failed (its log is named above); stopping" >&2
  exit 1
}

# train STEP OUT_DIR FLAGS...: run step 1 (sft), step 2 (reward) or step 3 (rlhf) on every GPU, into OUT_DIR,
# resuming if it can.
train() {
  local entry
  case "$1" in
    sft) entry=$ROOT/training/step1_supervised_finetuning/main.py ;;
    reward) entry=$ROOT/training/step2_reward_model_finetuning/main.py ;;
    rlhf) entry=$ROOT/training/step3_rlhf_finetuning/main.py ;;
    *) die "train: unknown step $1" ;;
  esac
  local out=$2 step_flags=${1^^}_FLAGS own
  shift 2
  read -ra own <<< "${!step_flags:-}"
  run "$out/training.log" "${LAUNCH[@]}" "$entry" --output_dir "$out" --resume \
    --enable_tensorboard --tensorboard_path "$out/tensorboard" "$@" "${own[@]}"
}

# dschat_reward_model OUT_DIR MODEL FLAGS...: step 2 as DeepSpeed-Chat's OPT recipes run it on one node: a reward
# model from MODEL (OPT-350m) on the --data_split 2,4,4 share of DATA.
dschat_reward_model() {
  local out=$1 model=$2
  shift 2
  train reward "$out" --model_name_or_path "$model" --data_path "${DATA_SOURCES[@]}" --data_split 2,4,4 \
    --num_padding_at_beginning 1 --per_device_train_batch_size 8 --per_device_eval_batch_size 8 --max_seq_len 512 \
    --learning_rate 5e-5 --weight_decay 0.1 --num_train_epochs 1 --dropout 0.0 --gradient_accumulation_steps 1 \
    --lr_scheduler_type cosine --num_warmup_steps 0 --seed 1234 --zero_stage "$ZERO_STAGE" --save_interval 500 "$@"
}

# dschat_ppo FLAGS...: step 3 as DeepSpeed-Chat's OPT recipes run it: PPO on the --data_split 2,4,4 share of DATA,
# the actor from OUTPUT/step1_sft and the critic from OUTPUT/step2_reward_model, one answer of up to 256 tokens per
# prompt of up to 256, 4 prompts per GPU, actor and critic both at ZERO_STAGE; FLAGS add each recipe's own.
dschat_ppo() {
  train rlhf "$OUTPUT/step3_rlhf" --algo ppo --actor_model_name_or_path "$OUTPUT/step1_sft" \
    --critic_model_name_or_path "$OUTPUT/step2_reward_model" --data_path "${DATA_SOURCES[@]}" --data_split 2,4,4 \
    --num_generations 1 --per_device_generation_batch_size 4 \
    --per_device_training_batch_size 4 --generation_batches 1 --ppo_epochs 1 --max_prompt_seq_len 256 \
    --max_answer_seq_len 256 --critic_learning_rate 5e-6 --num_train_epochs 1 --lr_scheduler_type cosine \
    --gradient_accumulation_steps 1 --num_warmup_steps 100 --actor_dropout 0.0 --seed 1234 \
    --actor_zero_stage "$ZERO_STAGE" --critic_zero_stage "$ZERO_STAGE" --save_interval 100 "$@"
}

# summarize: each step's eval figure before and after training, and OUTPUT/training_curves.png.
summarize() {
  run "$OUTPUT/summary.log" "$PYTHON" -m utils.evaluation.run_summary "$OUTPUT"
}
