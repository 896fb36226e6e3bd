# Set-up is part of every target: a fresh machine needs only python3.11.
# `make test` / `make demo` create .venv, install torch 2.13.0 (CPU) and
# setuptools<70, build mmcv 2.1.0 (about 10 min the first time; pip caches the
# wheel) and install this package with its test and deploy (onnx,
# onnxruntime) extras.  Both are idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.efficient_detr_mm-installed
PIP := $(BIN)/python -m pip

.PHONY: setup test demo lint clean-venv

setup: $(STAMP)

$(STAMP): setup.cfg setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q 'pip==26.3'
	$(PIP) install -q torch==2.13.0
	# mmcv's setup.py imports pkg_resources; mmengine needs it for mmdet:: bases
	$(PIP) install -q 'setuptools<70' wheel numpy
	MAX_JOBS=$${MAX_JOBS:-2} $(PIP) install --no-build-isolation 'mmcv==2.1.0'
	$(PIP) install -q --no-build-isolation -e '.[tests,deploy]'
	$(BIN)/python -c "import efficient_detr_mm, mmcv.ops, onnxruntime; print('efficient_detr_mm', efficient_detr_mm.__version__, 'ready')"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest tests -q

demo: $(STAMP)
	$(BIN)/python projects/shapes/demo.py

lint: $(STAMP)
	$(BIN)/python -m flake8 efficient_detr_mm tools tests projects configs demo
	$(BIN)/python -m isort --check-only --diff efficient_detr_mm tools tests projects demo

clean-venv:
	rm -rf $(VENV)
