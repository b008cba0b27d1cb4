#!/usr/bin/env bash
# The demo's step 3 for three seeds (`make demo-seeds`), from the same models: the step-1 and step-2 models and GRPO's
# math warm start that `make demo` left in OUTPUT. Seed 1234 is the demo's own run, OUTPUT/step3_rlhf; each other
# seed trains the five algorithms again with run_tiny.sh's flags, into OUTPUT/step3_seeds/seed_SEED. The last lines
# give each figure's min and median per algorithm and check the demo's targets for every seed (the exit status is 1
# if one is missed); OUTPUT/step3_rlhf/seeds.json holds every run's figures.
#   bash training_scripts/demo/run_seeds.sh [extra flags for every step-3 run]
# Overrides: SEEDS (default "1234 7 1"), and run_tiny.sh's.
source "$(dirname "${BASH_SOURCE[0]}")/run_tiny.sh"
: "${SEEDS:=1234 7 1}"
prepare
for model in step1_sft step2_reward_model step1_math; do
  [ "$DRY_RUN" = 1 ] || [ -e "$OUTPUT/$model/eval_results.json" ] \
    || die "$OUTPUT/$model: no finished model; run \`make demo\` (or run_tiny.sh) first"
done
runs=()
for seed in $SEEDS; do
  [[ "$seed" =~ ^[0-9]+$ ]] || die "SEEDS=$SEEDS: give whole numbers, space-separated"
  dir=$OUTPUT/step3_seeds/seed_$seed
  [ "$seed" != 1234 ] || dir=$OUTPUT/step3_rlhf  # --seed's default: the demo's own run, skipped if finished
  demo_step3 "$dir" --seed "$seed" "$@"
  demo_grpo "$dir" --seed "$seed" "$@"
  runs+=("$seed=$dir")
done
settle
run "$OUTPUT/step3_rlhf/seeds.log" "$PYTHON" -m utils.evaluation.seed_table "$OUTPUT/step3_rlhf/seeds.json" "${runs[@]}"
