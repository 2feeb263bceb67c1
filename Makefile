# Shortcuts for the scripts the README documents (no make needed to use cohortflow).
.PHONY: setup lock demo test test-fast schema clean

setup:  ## create .venv with exactly the versions of requirements.lock, and cohortflow
	bash scripts/setup.sh

lock:  ## re-resolve requirements.lock after editing pyproject.toml (UPGRADE=1: newest versions)
	bash scripts/lock.sh $(if $(UPGRADE),--upgrade)

demo:  ## set up, run the demo study -> results/demo/report.html
	bash scripts/demo.sh

test:  ## set up (incl. SLURM), lint, type-check and run the whole test suite
	bash scripts/test.sh

test-fast:  ## the fast lane: unit tests without services or whole studies (under 2 minutes)
	bash scripts/test.sh --fast

schema: setup  ## regenerate workflow/schemas/study.schema.json from the typed model
	.venv/bin/cohortflow schema --out workflow/schemas/study.schema.json

clean:
	rm -rf results .snakemake
