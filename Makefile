# kizashi — the two set-up commands are `make demo` and `make test`.
# Both create .venv with Python 3.11 if needed and install everything the project needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.kizashi-installed

.PHONY: install demo test test-gpu test-install bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned to the CPU build: a loose requirement must never pull a CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/kizashi demo

# pytest exit code 5 (no tests collected) is a failure here, as is any other non-zero code.
# the report test opens the HTML report in headless Chromium: installed here when possible
# (Debian's `chromium`, as root); the test skips with a message when it cannot be.
test: install
	bash scripts/ensure_chromium.sh
	$(PY) -m pytest -m "not gpu" -q

test-gpu: install
	$(PY) -m pytest -m gpu -q

# opt-in, minutes, not part of `make test`: a fresh virtualenv with torch installed first keeps that
# torch through `pip install .` (tests/test_install.py, gated by KIZASHI_INSTALL_TEST=1).
test-install: install
	KIZASHI_INSTALL_TEST=1 $(PY) -m pytest -q tests/test_install.py

bench: install
	$(PY) benchmarks/bench_features.py

clean:
	rm -rf $(VENV) .pytest_cache
