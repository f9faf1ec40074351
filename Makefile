# Two commands on a fresh machine: `make demo` (DISCO vs Finetune, with zero-shot
# and MTL as references, on mini-FCIT;
# prints the Last/Avg table) and `make test`. Both create .venv on first use.
PYTHON ?= python3
# Empty: torch from pip's configured indexes. On plain PyPI Linux gets the CUDA build;
# `make TORCH_INDEX=https://download.pytorch.org/whl/cpu` fetches the CPU build.
TORCH_INDEX ?=
VENV := .venv
BIN := $(VENV)/bin
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1
export FLWR_DISABLE_UPDATE_CHECK := 1
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: demo test lint bench clean

$(BIN)/fcit-flower: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch first, so nothing pulls a CUDA build.
	$(BIN)/pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

demo: $(BIN)/fcit-flower
	$(BIN)/fcit-flower compare --methods zeroshot,finetune,disco,mtl --quiet

test: $(BIN)/fcit-flower
	$(BIN)/python -m pytest -q

lint: $(BIN)/fcit-flower
	$(BIN)/ruff check fcit_flower tests bench scripts
	$(BIN)/ruff format --check fcit_flower tests bench scripts
	$(BIN)/mypy fcit_flower

clean:
	rm -rf $(VENV) results
