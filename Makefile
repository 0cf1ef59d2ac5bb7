# Two entry points (README): `make demo` runs the pipeline on the demo cohort and writes its
# HTML report, `make test` runs the lint gates, the docs build and the test suite. Both create
# .venv first, once (idempotent).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test test-fast lint docs venv clean-results slurm-profile slurm-test

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	$(BIN)/pip check
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --keep-going --printshellcmds --scheduler greedy
	$(BIN)/snakemake --report results/report.html

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check .
	$(BIN)/snakemake --lint
	$(BIN)/snakemake --lint --configfile tests/configs/containers.yaml

# The documentation site (mkdocs.yml, docs/) into results/site, offline, warnings as errors:
# a broken link, a missing page or a schema the configuration reference cannot render fails.
# NO_MKDOCS_2_WARNING silences mkdocs-material's banner about its successor.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir results/site

test: lint docs
	$(BIN)/pytest

# The tests that run no workflow (no Snakemake process, no demo data) and train no network for
# long: under 2 minutes on 2 cores, for the edit-and-test loop. CI runs `make test`, all of them.
test-fast: $(STAMP)
	$(BIN)/pytest -m "not workflow and not network and not slow"

clean-results:
	rm -rf results/* .snakemake
	touch results/.gitkeep

# `snakemake --profile slurm` looks for profiles in ./slurm, $XDG_CONFIG_HOME/snakemake (default
# ~/.config/snakemake) and /etc/xdg/snakemake, not in profiles/: link profiles/slurm there
# (idempotent; a profile of your own named slurm is left alone). README: "Running on a SLURM
# cluster".
SNAKEMAKE_PROFILES := $(or $(XDG_CONFIG_HOME),$(HOME)/.config)/snakemake
slurm-profile:
	@mkdir -p "$(SNAKEMAKE_PROFILES)"
	@link="$(SNAKEMAKE_PROFILES)/slurm"; target="$(abspath profiles/slurm)"; \
	if [ -e "$$link" ] && [ ! -L "$$link" ]; then \
		echo "$$link exists and is not a link: move it away, or use --profile $$target" >&2; exit 1; \
	fi; \
	ln -sfn "$$target" "$$link" && echo "$$link -> $$target"

# The real SLURM test: a private one-node cluster with a fake GPU, the tiny demo through
# --executor slurm with profiles/slurm, then locally, outputs compared (skips if it cannot run).
slurm-test: $(STAMP)
	tests/slurm/run_slurm_test.sh
