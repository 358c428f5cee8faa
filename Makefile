# fairesi: the two set-up commands of the README.
#   make demo   install everything into .venv and run the end-to-end demo
#   make test   install everything (with test tools) into .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
DEMO_OUT ?= demo-output

.PHONY: install demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is installed first because the op library and the runner are built against it
# (no build isolation); the package build is incremental (build/ is kept).
install: $(BIN)/python
	$(PIP) install --quiet "torch==2.13.0" "scikit-build-core>=0.10" "pybind11>=2.12" numpy
	$(PIP) install --quiet --no-build-isolation ".[test]"

demo: install
	$(BIN)/fairesi demo --out $(DEMO_OUT)

# pytest exits 5 when it collected no tests: that is a failure, never a vacuous pass.
test: install
	$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint:
	$(BIN)/ruff check python tests bench
	$(BIN)/ruff format --check python tests bench

clean:
	rm -rf build dist $(DEMO_OUT)
