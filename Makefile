# qkdsim: every target sets itself up on a machine with only python3 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
SCENARIO ?= scenarios/quickstart.yaml

.PHONY: run test serve bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python run_scenario.py $(SCENARIO)

test: $(STAMP)
	$(BIN)/python -m pytest

serve: $(STAMP)
	$(BIN)/python run_scenario.py --serve

BENCH_SCENARIOS ?= scenarios/quickstart.yaml scenarios/two_sites.yaml scenarios/city.yaml

bench: $(STAMP)
	$(BIN)/python bench/sim_speed.py $(BENCH_SCENARIOS)
	$(BIN)/python bench/node_throughput.py
	$(BIN)/python bench/scaling.py --sizes 10 100 1000
	$(BIN)/python bench/soak.py

clean:
	rm -rf $(VENV) results .pytest_cache .hypothesis
