# The README's two commands: `make demo` (main job) and `make test` (test suite).
# Both create .venv if missing and install from the committed lock (constraints.txt: the exact
# versions the suite passed with), never "whatever pip picks today". TORCH_SPEC pins torch's
# release (the CPU wheel on disk here); GPU users give an index for the CUDA build of the same
# release, e.g. `make test PIP_EXTRA="--extra-index-url https://download.pytorch.org/whl/cu130"`.
#
# `make test-min` runs the suite on the lowest versions the pyproject admits (constraints-min.txt,
# a second venv): CI runs both. `make upgrade-lock` tries the newest releases the pyproject
# admits in a fresh venv, runs the suite, and rewrites constraints.txt only if it passes;
# `make min-lock` does the same for requirements-min.in -> constraints-min.txt.
VENV ?= .venv
MIN_VENV ?= .venv-min
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
PIP_EXTRA ?=
PIP := -m pip install -q --disable-pip-version-check --no-compile $(PIP_EXTRA)

.PHONY: setup demo test test-min lint bench upgrade-lock min-lock clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) $(PIP) -c constraints.txt "$(TORCH_SPEC)"
	$(PY) $(PIP) -c constraints.txt -e ".[dev]"
	touch $@

$(MIN_VENV)/.installed: pyproject.toml constraints-min.txt
	test -x $(MIN_VENV)/bin/python || python3 -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python $(PIP) -c constraints-min.txt "$(TORCH_SPEC)"
	$(MIN_VENV)/bin/python $(PIP) -c constraints-min.txt -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/hooked-vlm demo

# Two pytest processes side by side (tests/conftest.py pins one torch thread each): the tests
# that start notebook kernels or a Ray cluster, and all the others; the first's log follows.
test: setup
	@log=$$(mktemp); \
	$(PY) -m pytest -m "notebooks or ray" > $$log 2>&1 & slow=$$!; \
	$(PY) -m pytest -m "not notebooks and not ray"; fast=$$?; \
	wait $$slow; slow_rc=$$?; \
	echo "--- the notebook and Ray-cluster tests (exit $$slow_rc):"; cat $$log; rm -f $$log; \
	test $$fast -eq 0 -a $$slow_rc -eq 0

test-min: $(MIN_VENV)/.installed
	$(MIN_VENV)/bin/python -m pytest -m "not notebooks and not ray"

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks scripts notebooks

bench: setup
	$(PY) $(PIP) -c constraints.txt -e ".[bench]"
	$(PY) benchmarks/overhead.py

# Fresh venv, newest admitted releases, suite must pass, then the lock is rewritten.
upgrade-lock:
	rm -rf .venv-upgrade && python3 -m venv .venv-upgrade
	.venv-upgrade/bin/python $(PIP) "$(TORCH_SPEC)"
	.venv-upgrade/bin/python $(PIP) -e ".[dev,bench]" "$(TORCH_SPEC)"
	.venv-upgrade/bin/python -m pytest
	.venv-upgrade/bin/python scripts/freeze_lock.py .venv-upgrade constraints.txt \
		"the newest releases pyproject.toml admits"
	rm -rf .venv-upgrade

min-lock:
	rm -rf .venv-minlock && python3 -m venv .venv-minlock
	.venv-minlock/bin/python $(PIP) "$(TORCH_SPEC)"
	.venv-minlock/bin/python $(PIP) -c requirements-min.in -e ".[dev,bench]"
	.venv-minlock/bin/python -m pytest
	.venv-minlock/bin/python scripts/freeze_lock.py .venv-minlock constraints-min.txt \
		"the lowest versions pyproject.toml admits (requirements-min.in)"
	rm -rf .venv-minlock

clean:
	rm -rf $(VENV) $(MIN_VENV) results
