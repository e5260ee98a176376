# Two entry points for a fresh machine:
#   make demo   set up .venv and run the whole demo (train, detect, evaluate, report)
#   make test   set up .venv and run the test suite
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
TORCH_VERSION ?= 2.13.0

.PHONY: setup setup-dev demo demo-quick test lint bench clean

# the package with what the demo needs (nilearn's MNI152 anatomy)
$(VENV)/.demo: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU build of torch first, so that the package's torch range needs nothing more
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e ".[demo]"
	touch $@

# and what the tests need besides (pytest, ruff, preprocessing, browser driver, export, BIDS)
$(VENV)/.dev: $(VENV)/.demo
	$(BIN)/python -m pip install -q -e ".[dev,demo]"
	touch $@

setup: $(VENV)/.demo

setup-dev: $(VENV)/.dev

demo: setup
	$(BIN)/disyre demo -o demo_out

demo-quick: setup
	$(BIN)/disyre demo -o demo_out_quick --quick --overwrite

test: setup-dev
	$(BIN)/python -m pytest -q

lint: setup-dev
	$(BIN)/ruff check src tests benchmarks

bench: setup-dev
	$(BIN)/python -m benchmarks.speed.run_all

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
