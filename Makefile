# Two entry points, each doing its own set-up: `make suites` (the bundled contract suites, with the
# results table) and `make test` (the plugin's own tests). Both create .venv on first use and
# reinstall only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# torch and torchvision are pinned at install time to the CPU-capable releases this project is
# tested with; pyproject.toml only declares ranges.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

# The runtimes' own variables that cap their instruction set at AVX2 (docs/architecture.md says
# which runtime obeys which): `make test-avx2` runs the tests as an AVX2-only machine would.
ISA_CAP_AVX2 := ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
	FBGEMM_ENABLE_INSTRUCTIONS=AVX2
# The test modules whose results depend on the CPU's instruction sets (the others drive the plugin
# with pure-Python fakes): what CI runs again under the cap, `make test-avx2 ARGS="$(ISA_TESTS)"`.
ISA_TESTS := tests/test_hardware.py tests/test_runtime_techniques.py tests/test_keras_techniques.py \
	tests/test_optimizations.py tests/test_torch_techniques.py tests/test_efficiency.py

.PHONY: suites test test-avx2 test-avx2-isa lint typecheck check benchmark clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PINS) -e '.[all,dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

suites: $(STAMP)
	$(BIN)/python -m pytest suites/ --modelopt-json results/suites.json $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest --modelopt-strict $(ARGS)

test-avx2: $(STAMP)
	env $(ISA_CAP_AVX2) $(BIN)/python -m pytest --modelopt-strict $(ARGS)

test-avx2-isa: $(STAMP)
	env $(ISA_CAP_AVX2) $(BIN)/python -m pytest --modelopt-strict $(ISA_TESTS) $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests suites benchmarks
	$(BIN)/ruff format --check src tests suites benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

benchmark: $(STAMP)
	$(BIN)/python benchmarks/verdict_quality.py $(ARGS)

clean:
	rm -rf $(VENV) results .pytest_cache .mypy_cache .ruff_cache
