# The two commands of README.md: `make study` (embedded mini study) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
TARGET ?= results/fig2.pdf
# Test processes (pytest-xdist); a test file runs whole on one of them (--dist loadfile), so
# that a module's fixture (test_workflow.py's tiny study) is built once, and in the order
# tests/conftest.py gives (--no-loadscope-reorder): the longest first. 0: in this process.
# (Not loadgroup: with pytest 9.2 it no longer groups, pytest-dev/pytest-xdist#1386.)
TEST_WORKERS ?= 2

.PHONY: setup study test lint clean

$(BIN)/snakemake: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

setup: $(BIN)/snakemake

study: setup
	@echo "Building $(TARGET) on the mini preset. results/fig2.pdf needs the mini corpora and 9 raw"
	@echo "CoMMA runs (3 tasks x 3 seeds) and their R(p); make study TARGET=all builds every figure,"
	@echo "table and the findings (AR teachers, distillation, alignments and NAR models too)."
	$(BIN)/snakemake --cores $(CORES) $(TARGET)

test: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: setup
	$(BIN)/ruff check comma workflow_scripts tests benchmarks
	$(BIN)/ruff format --check comma workflow_scripts tests benchmarks
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint

clean:
	rm -rf work results/*.md results/*.png results/*.pdf logs logs/benchmarks .snakemake
