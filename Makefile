# qkdsim: every target sets itself up on a machine with only python3 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
SCENARIO ?= scenarios/quickstart.yaml

.PHONY: run test lint lock serve bench wheel clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,ray]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python run_scenario.py $(SCENARIO)

test: lint $(STAMP)
	$(BIN)/python -m pytest

# pyflakes and import order everywhere; types strictly in the engine and the nodes
lint: $(STAMP)
	$(BIN)/ruff check simulator nodes tests bench run_scenario.py
	$(BIN)/mypy --strict simulator nodes
	$(BIN)/mypy run_scenario.py

serve: $(STAMP)
	$(BIN)/python run_scenario.py --serve

BENCH_SCENARIOS ?= scenarios/quickstart.yaml scenarios/two_sites.yaml scenarios/city.yaml

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[bench]'
	$(BIN)/python bench/engine_vs_simpy.py
	$(BIN)/python bench/sim_speed.py $(BENCH_SCENARIOS)
	$(BIN)/python bench/node_throughput.py
	$(BIN)/python bench/scaling.py --sizes 10 100 1000 --topology backbone
	$(BIN)/python bench/soak.py

# the wheel a client project installs (it carries the qkd_network pytest plugin)
wheel: $(STAMP)
	$(BIN)/python -m pip wheel --quiet --no-deps -w dist .

# constraints.txt again, from a fresh venv resolved from pyproject.toml alone
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip
	.venv-lock/bin/python -m pip install --quiet -e '.[test,ray,bench]'
	{ head -2 constraints.txt; .venv-lock/bin/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) results dist .pytest_cache .hypothesis
