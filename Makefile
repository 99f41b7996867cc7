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

.PHONY: setup demo test test-all lint strip bench gpu-carry gpu-dry-run clean

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

# the sliders of notebooks 01 and 02 in JupyterLab + headless Chromium (skips without /usr/bin/chromium)
test-browser: $(STAMP)
	$(PY) -m pytest -m browser

# the student version of the lab: every solution replaced by a stub (actionpp lab export, actionpp/lab/)
LAB_STUDENT ?= runs/lab-student
lab-student: $(STAMP)
	$(VENV)/bin/actionpp lab export --student $(LAB_STUDENT)

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

# The folder bench/gpu_suite.py takes to a GPU machine (bench/README.md): real ACDC packed without its test
# split (~53 MiB; the test volumes would take it past the 64 MiB a device call carries) and the
# wheels the GPU image lacks (GPU_WHEELS="name==version ...", pinned, pure Python; none is needed today),
# then what a device call would send, checked against its 64 MiB.
GPU_DATA   ?= $(or $(ACTIONPP_SHARED),../shared)/data/acdc
GPU_WHEELS ?=
gpu-carry: $(STAMP)
	mkdir -p .gpu_carry
	test -f .gpu_carry/acdc.pack || $(VENV)/bin/actionpp data pack $(GPU_DATA) .gpu_carry/acdc.pack --leave-out test
	$(if $(strip $(GPU_WHEELS)),$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -d .gpu_carry/whl $(GPU_WHEELS),@echo "no wheels to carry (GPU_WHEELS is empty)")
	$(PY) bench/gpu_suite.py --check-carry

# every stage of the GPU suite at the smallest sizes on the CPU (about a minute)
gpu-dry-run: $(STAMP)
	$(PY) bench/gpu_suite.py --dry-run

clean:
	rm -rf $(VENV) runs .pytest_cache
