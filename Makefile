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
.PHONY: help install run sweep ui services test test-fast bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  Variables: ARGS='model=gru trainer.epochs=3' WORKERS=N PORT=5000"
	@echo "             SWEEP=demo (built-in corpus, a few minutes) | rnn | transformer | all | budget (real lyrics: add"
	@echo "             ARGS='data.path=/path/to/song_lyrics.csv') | gpt2_lora (needs a GPT-2 preset)"

install: $(STAMP) ## Create .venv and install lyricslab (editable) with its test tools

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: install ## Train one model: make run ARGS='model=lstm trainer.epochs=5'
	$(BIN)/python -m lyricslab.run $(ARGS)

sweep: install ## Optuna sweep (demo: 12 trials on the built-in corpus, a few minutes): make sweep [SWEEP=demo] [WORKERS=1] [ARGS='n_trials=4']
	$(BIN)/python -m lyricslab.sweep sweep=$(SWEEP) workers=$(WORKERS) $(ARGS)

ui: install ## MLflow UI for the local store (sqlite:///mlruns/mlflow.db) on http://127.0.0.1:$(PORT)
	@mkdir -p mlruns
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --host 127.0.0.1 --port $(PORT)

services: install ## PostgreSQL + MLflow server for sweeps across hosts: make services [ARGS=status|down]
	PYTHON=$(abspath $(BIN))/python scripts/services.sh $(if $(ARGS),$(ARGS),up)

test: install ## The full test suite, as CI runs it (tiny models, real PostgreSQL + MLflow servers), then the backends subset on JAX: make test [ARGS="-k sweep"]
	$(BIN)/python -m pytest -q --durations=15 $(ARGS)
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q --durations=5 -m backends $(ARGS)

test-fast: install ## The quick subset: every module, no subprocess or multi-model tests (pytest -m "not slow")
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

bench: install ## Benchmarks, then BENCHMARKS.md from their results: make bench [ARGS='--quick' | ARGS='mfu ingest' | ARGS='sweep load']
	$(BIN)/python -m bench $(ARGS)
	$(BIN)/python -m bench $(filter --quick,$(ARGS)) report

clean: ## Remove caches and run outputs (keeps .venv)
	rm -rf .cache .pytest_cache mlruns outputs multirun
	find bench/out -mindepth 1 -maxdepth 1 ! -name results.json -exec rm -rf {} + 2>/dev/null || true  # results.json: the benchmarks' history
