# arun — developer entry points. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
ARUN_ROOT ?= /var/lib/arun
ARUN_STATE ?= /run/arun
ARUN_ADDRESS ?= /run/arun/arun.sock
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

deps: ## install the system packages arun and its tests use (Debian; needs root)
	./contrib/install-deps.sh

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

dev: $(VENV)/.installed ## create the venv and install arun with its dev tools

protos: dev ## regenerate src/arun/api from protos/
	$(PY) tools/genprotos.py

check-protos: protos ## fail if the committed generated code differs from protos/
	git diff --exit-code --stat -- src/arun/api
	test -z "$$(git status --porcelain -- src/arun/api)"

fmt: dev ## format the code
	$(VENV)/bin/ruff format src tests tools

lint: dev ## ruff
	$(VENV)/bin/ruff check src tests tools

typecheck: dev ## mypy --strict on src/arun
	$(VENV)/bin/mypy src/arun

imports: dev ## check the layer rule of STYLE.md
	$(VENV)/bin/lint-imports

check: lint typecheck imports check-protos ## all static checks

test: deps dev ## the whole suite (unit + integration; run as root for the real-runc tests)
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: dev ## unit tests only (no root needed)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# The zygote's template imports every module a shim runs; compiled in memory instead of loaded
# from caches they leave ~1.5 MiB more in the image all shims share (docs/notes/slimimg.md), so
# the targets that start the daemon write the caches first, plain and -OO (the zygote's level),
# whatever PYTHONDONTWRITEBYTECODE says. Only stale files are compiled again.
bytecode: dev ## compile arun's modules (plain and -OO caches) for the zygote to load
	$(PY) -m compileall -q src/arun
	$(PY) -OO -m compileall -q src/arun

bench: deps dev bytecode ## benchmarks, side by side with the references where one exists
	$(PY) -m arun.benchmarks $(BENCH_ARGS)

run: deps dev bytecode ## start the daemon on its embedded defaults (/var/lib/arun, /run/arun)
	$(VENV)/bin/arun daemon --root $(ARUN_ROOT) --state $(ARUN_STATE) --address $(ARUN_ADDRESS)

clean: ## remove build output and caches
	rm -rf build dist *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis .import_linter_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -prune -exec rm -rf {} +

.PHONY: help deps dev protos check-protos fmt lint typecheck imports check test test-unit bench run clean
