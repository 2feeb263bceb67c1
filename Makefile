# The README's two commands:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint schema clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.installed  ## create .venv with cohortflow and its test tools

demo: setup  ## run the demo study on the laptop profile -> results/demo/report.html
	$(BIN)/cohortflow run

test: setup  ## lint, type-check and run the whole test suite
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest

schema: setup  ## regenerate workflow/schemas/study.schema.json from the typed model
	$(BIN)/cohortflow schema --out workflow/schemas/study.schema.json

clean:
	rm -rf results .snakemake
