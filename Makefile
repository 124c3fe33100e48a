# Two commands on a fresh machine:  `make demo`  (the main job)  and  `make test`  (what CI runs).
VENV        ?= .venv
PYTHON      ?= python3
# torch/torchvision must be a matching pair (nnU-Net's trainer lookup imports timm -> torchvision);
# this pair works on CPU-only machines and on CUDA 13 GPUs. Override for your platform if needed.
TORCH_SPEC  ?= torch==2.14.1 torchvision==0.29.1
PIP          = $(VENV)/bin/python -m pip
STAMP        = $(VENV)/.deps-installed

.PHONY: install demo test test-fast bench-cpu clean

# Network hiccups must not fail an install: pip retries each connection and resumes broken
# downloads (a 53 MB SimpleITK wheel once stopped at 46 MB), and each step is tried up to 5 times.
PIP_NET      = --retries 10 --timeout 60
RETRY        = for attempt in 1 2 3 4 5; do
UNTIL_OK     = && break; [ $$attempt = 5 ] && exit 1; echo "pip failed (attempt $$attempt), retrying"; sleep 30; done

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(RETRY) $(PIP) install -q $(PIP_NET) --upgrade pip $(UNTIL_OK)
	$(RETRY) $(PIP) install -q $(PIP_NET) --resume-retries 20 $(TORCH_SPEC) $(UNTIL_OK)
	$(RETRY) $(PIP) install -q $(PIP_NET) --resume-retries 20 hatchling ".[test]" $(UNTIL_OK)
	touch $(STAMP)

# (re)install the package itself, non-editable: tests always run against the installed wheel contents
install: $(STAMP)
	$(PIP) install -q --no-deps --no-build-isolation --force-reinstall .

demo: install
	$(VENV)/bin/nnunet-mamba doctor
	$(VENV)/bin/nnunet-mamba demo

# ruff (pyflakes + pycodestyle errors/warnings, settings in pyproject.toml) first; then the pytest script (not
# `python -m pytest`), which keeps the source folder off sys.path: the installed package is tested
test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest

test-fast: install
	$(VENV)/bin/pytest -m "not slow"

bench-cpu: install
	$(VENV)/bin/python benchmarks/scan.py --cpu

clean:
	rm -rf $(VENV) build dist nnunet_mamba_demo
