# Every target bootstraps .venv (Python >= 3.11, pip) when it is missing.
# make train WORKDIR=runs/seed1 ARGS=--config.seed=1   passes config overrides.
# make ACCEL=tpu train | make ACCEL=cuda12 train       installs jax for that accelerator (default: CPU jaxlib).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ACCEL ?=
ifneq ($(filter-out tpu cuda12,$(ACCEL)),)
$(error ACCEL=$(ACCEL): use ACCEL=tpu, ACCEL=cuda12, or leave it empty for CPU)
endif
comma := ,
ACC := $(or $(ACCEL),cpu)
# `make train` / `make bench` install the package alone (plus the accelerator extra); `make test`
# and `make lint` add the [test], [beam] and [interop] extras and libtpu (in .venv/libtpu, for jaxclr.plan). One stamp per accelerator: switching ACCEL finds no stamp
# and reinstalls, removing the other's plugin.
STAMP := $(VENV)/.installed-$(ACC)
TEST_STAMP := $(VENV)/.installed-test-$(ACC)
PLUGINS_tpu := libtpu
PLUGINS_cuda12 := jax-cuda12-plugin jax-cuda12-pjrt
OTHER_PLUGINS := $(filter-out $(PLUGINS_$(ACCEL)),$(PLUGINS_tpu) $(PLUGINS_cuda12))
WORKDIR ?= runs/default
ARGS ?=

.PHONY: install train test test-fast bench lint clean

install: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	rm -f $(VENV)/.installed*
	$(PY) -m pip uninstall --quiet --quiet --yes $(OTHER_PLUGINS)
	$(PY) -m pip install --quiet -e '.$(if $(ACCEL),[$(ACCEL)])'
	echo '$(ACC)' > $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,beam,interop$(if $(ACCEL),$(comma)$(ACCEL))]'
	# libtpu for `python -m jaxclr.plan` and its compile test, outside site-packages so that no other
	# jax process of this venv finds it (jaxclr/bench/tpu_env.py says why)
	$(PY) -m pip install --quiet --no-deps --upgrade --target $(VENV)/libtpu "$$($(PY) -c 'from jaxclr.bench import tpu_env; print(tpu_env.requirement())')"
	echo '$(ACC)' > $(TEST_STAMP)

train: $(STAMP)
	$(PY) -m jaxclr.train --config=configs/default.py --workdir=$(WORKDIR) $(ARGS)

# Two pytest-xdist workers, each test file on one of them (module fixtures are built once per file).
# The suite is mostly XLA compiles, each on one core: two workers keep both cores of CI busy.
PYTEST_WORKERS ?= 2

test: $(TEST_STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile tests

test-fast: $(TEST_STAMP)   # the quick loop: every test not marked slow
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile -m "not slow" tests

bench: $(STAMP)
	$(PY) -m jaxclr.bench.loss_memory
	$(PY) -m jaxclr.bench.loss_speed
	$(PY) -m jaxclr.bench.micro_batches
	$(PY) -m jaxclr.bench.input_pipeline
	$(PY) -m jaxclr.bench.checkpoint_cost
	$(PY) -m jaxclr.bench.loop_speed

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check jaxclr configs tests

clean:
	rm -rf $(VENV) runs .pytest_cache
