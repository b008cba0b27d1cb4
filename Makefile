# Two commands on a fresh machine: `make demo` and `make test`. Both build and reuse .venv/.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export DS_ACCELERATOR ?= cpu
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

demo: $(VENV)/.installed
	bash scripts/demo.sh

test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadfile tests  # two workers; a file stays on one, sharing its fixtures

bench: $(VENV)/.installed  # about 6 minutes on 2 idle cores; trl is an optional extra, installed here only
	$(PY) -m pip install -q -r benchmarks/requirements.txt
	$(PY) benchmarks/reward_bench.py --out benchmarks/results/latest.json

clean:
	rm -rf $(VENV) demo_output
