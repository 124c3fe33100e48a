# Two commands on a fresh machine:  `make demo`  (the main job)  and  `make test`  (what CI runs).
VENV        ?= .venv
PYTHON      ?= python3
# torch/torchvision must be a matching pair (nnU-Net's trainer lookup imports timm -> torchvision);
# this pair works on CPU-only machines and on CUDA 13 GPUs. Override for your platform if needed.
TORCH_SPEC  ?= torch==2.14.1 torchvision==0.29.1
PIP          = $(VENV)/bin/python -m pip
STAMP        = $(VENV)/.deps-installed

.PHONY: install demo test test-fast bench-cpu clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q hatchling ".[test]"
	touch $(STAMP)

# (re)install the package itself, non-editable: tests always run against the installed wheel contents
install: $(STAMP)
	$(PIP) install -q --no-deps --no-build-isolation --force-reinstall .

demo: install
	$(VENV)/bin/nnunet-mamba doctor
	$(VENV)/bin/nnunet-mamba demo

# the pytest script (not `python -m pytest`) keeps the source folder off sys.path: the installed package is tested
test: install
	$(VENV)/bin/pytest

test-fast: install
	$(VENV)/bin/pytest -m "not slow"

bench-cpu: install
	$(VENV)/bin/python benchmarks/scan.py --cpu

clean:
	rm -rf $(VENV) build dist nnunet_mamba_demo
