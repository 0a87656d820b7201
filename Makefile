# lyricslab: every target installs what it needs first (a stamp makes that a no-op after the first time).
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.install.stamp
SWEEP   ?= demo
WORKERS ?= 1
PORT    ?= 5000
ARGS    ?=

.DEFAULT_GOAL := help
.PHONY: help install run sweep ui services test bench clean

help: ## List the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'
	@echo "  Variables: ARGS='model=gru trainer.epochs=3' SWEEP=demo|rnn|transformer|all WORKERS=N PORT=5000"

install: $(STAMP) ## Create .venv and install lyricslab (editable) with its test tools

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: install ## Train one model: make run ARGS='model=lstm trainer.epochs=5'
	$(BIN)/python -m lyricslab.run $(ARGS)

sweep: install ## Optuna sweep: make sweep [SWEEP=demo] [WORKERS=1] [ARGS='n_trials=4']
	$(BIN)/python -m lyricslab.sweep sweep=$(SWEEP) workers=$(WORKERS) $(ARGS)

ui: install ## MLflow UI for mlruns/ on http://127.0.0.1:$(PORT)
	@mkdir -p mlruns
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --host 127.0.0.1 --port $(PORT)

services: install ## PostgreSQL + MLflow server for sweeps across hosts: make services [ARGS=status|down]
	PYTHON=$(abspath $(BIN))/python scripts/services.sh $(if $(ARGS),$(ARGS),up)

test: install ## Run the test suite (tiny models, a few minutes on 2 cores)
	$(BIN)/python -m pytest -q $(ARGS)

bench: install ## Benchmarks, then BENCHMARKS.md from their results: make bench [ARGS='--quick' | ARGS='mfu ingest' | ARGS='sweep load']
	$(BIN)/python -m bench $(ARGS)
	$(BIN)/python -m bench $(filter --quick,$(ARGS)) report

clean: ## Remove caches and run outputs (keeps .venv)
	rm -rf .cache .pytest_cache mlruns outputs multirun bench/out
