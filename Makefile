# Every target bootstraps .venv (Python >= 3.11, pip) when it is missing.
# make train WORKDIR=runs/seed1 ARGS=--config.seed=1   passes config overrides.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORKDIR ?= runs/default
ARGS ?=

.PHONY: train test test-fast bench lint clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

train: $(STAMP)
	$(PY) -m jaxclr.train --config=configs/default.py --workdir=$(WORKDIR) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q tests

test-fast: $(STAMP)   # the quick loop: every test not marked slow
	$(PY) -m pytest -q -m "not slow" tests

bench: $(STAMP)
	$(PY) -m jaxclr.bench.loss_memory
	$(PY) -m jaxclr.bench.loss_speed

lint: $(STAMP)
	$(VENV)/bin/ruff check jaxclr configs tests

clean:
	rm -rf $(VENV) runs .pytest_cache
