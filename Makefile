# Two commands matter: `make lab` (set up, bring up labs/smoke.yaml, verify it)
# and `make test` (every test, unit and lab). Both install what is missing first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
KVMLAB := $(VENV)/bin/kvmlab
PYTEST_ARGS ?=

.PHONY: deps host venv image lab down test test-slow unit lint bench clean

deps: host venv

host:
	bash scripts/host-setup.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

image: deps
	$(KVMLAB) image build

lab: image
	$(KVMLAB) up labs/smoke.yaml --verify

down: venv
	$(KVMLAB) down smoke

test: image
	PYTHON=$(PY) bash scripts/run-tests.sh $(PYTEST_ARGS)

test-slow: image
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest -m "not lab" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: image
	$(PY) bench/lab_up.py labs/smoke.yaml
	$(PY) bench/storage.py

clean:
	rm -rf $(VENV) artifacts .pytest_cache
