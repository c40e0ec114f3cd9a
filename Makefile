# `make demo` and `make test` each set up .venv on a fresh machine (pinned dependencies), then run.
# `make demo` installs what running needs (requirements.txt); `make test` adds the tests' and the build's
# (requirements-dev.txt: bpy, pytest). Both lists are complete and pinned, installed with --no-deps.
# TORCH is the torch build: the CPU one by default. For CUDA, e.g.
#   make demo TORCH=torch==2.13.0 TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3.11
TORCH ?= torch==2.13.0+cpu
TORCH_INDEX ?=
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --no-deps
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test bench clean

$(RUN_STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_INDEX) "$(TORCH)"
	$(PIP) -r requirements.txt
	$(PIP) --no-build-isolation -e .
	touch $(RUN_STAMP)

$(DEV_STAMP): $(RUN_STAMP) requirements-dev.txt
	$(PIP) -r requirements-dev.txt
	touch $(DEV_STAMP)

demo: $(RUN_STAMP)
	$(VENV)/bin/next3d demo --out out

test: $(DEV_STAMP)
	$(PY) -m pytest -q tests

bench: $(RUN_STAMP)
	$(PY) bench/frame.py

clean:
	rm -rf $(VENV) out dist build *.egg-info
