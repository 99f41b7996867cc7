# Two entry points for a fresh machine (see README):
#   make demo   set up .venv and run the notebook sequence on the phantom (CPU)
#   make test   set up .venv and run the test suite
# The venv is rebuilt only when pyproject.toml changes (stamp file), so re-runs are fast.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The CPU wheel of torch is pinned here and only here: an unpinned torch (or monai
# installed before torch) pulls a multi-GB CUDA build. pyproject.toml keeps a range.
TORCH  ?= torch==2.13.0

.PHONY: setup demo test test-all lint strip bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[notebooks,dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/actionpp demo

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
test: $(STAMP)
	@$(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-all: $(STAMP)
	$(PY) -m pytest -m ""

# ruff (lint + import order), mypy (actionpp/), and notebooks stored without outputs
# (nbstripout --verify: exit 1 if any notebook holds outputs; `make strip` strips them, ids and tags kept).
lint: $(STAMP)
	$(VENV)/bin/ruff check actionpp tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/nbstripout --keep-id --verify notebooks/*.ipynb

strip: $(STAMP)
	$(VENV)/bin/nbstripout --keep-id notebooks/*.ipynb

# every benchmark; each writes its own section of docs/benchmarks.md
bench: $(STAMP)
	$(PY) bench/bench_losses.py
	$(PY) bench/bench_train.py
	$(PY) bench/bench_augment.py
	$(PY) bench/bench_models.py

clean:
	rm -rf $(VENV) runs .pytest_cache
