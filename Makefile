# The README's two commands: `make demo` (main job) and `make test` (test suite).
# Both create .venv if missing and install with pip. TORCH_SPEC pins the CPU wheel on disk;
# GPU users override it, e.g. `make test TORCH_SPEC="torch==2.13.0" PIP_EXTRA="--index-url ..."`.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
PIP_EXTRA ?=

.PHONY: setup demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q $(PIP_EXTRA) "$(TORCH_SPEC)"
	$(PY) -m pip install -q $(PIP_EXTRA) -e ".[dev]" "$(TORCH_SPEC)"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/hooked-vlm demo

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks scripts

bench: setup
	$(PY) benchmarks/overhead.py

clean:
	rm -rf $(VENV) results
