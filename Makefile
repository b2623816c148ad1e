# Two commands on a fresh machine with Python 3.11 and pip:
#   make run    install everything, run the default pipeline end to end
#   make test   install everything, run the tests
PYTHON ?= python3
VENV   ?= .venv
CORES  ?= 2
BIN    := $(VENV)/bin

.PHONY: run truth test install bench clean

# The run records itself in DVC (dvc.lock and the cache), so `dvc status` is clean after it.
run: install
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/dvc commit --force --quiet

# Ground truth (docs/truth.md): the planted model and every method graded on it, after the default run.
truth: install
	$(BIN)/snakemake --cores $(CORES) truth
	$(BIN)/dvc commit --force --quiet

# The browser tests need Debian's chromium: installed here where apt-get can (about 25 s), else they skip.
test: install
	@command -v chromium >/dev/null || (apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 \
	  || (apt-get update -qq && apt-get install -y --no-install-recommends chromium >/dev/null)) 2>/dev/null \
	  || echo "chromium not installed; browser tests will skip"
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/bench_activations.py
	$(BIN)/python benchmarks/bench_pipeline.py

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

clean:
	rm -rf results .snakemake
