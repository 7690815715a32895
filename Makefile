# Nakhon: `make demo` shows the pipeline working, `make test` runs every test.
# Each target installs what it needs first, so both work on a fresh Debian machine.

SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
STACK := deploy/local/stack.sh

.PHONY: help venv lock up down status test unit integration lint format demo simulate bench bench-scaling chaos clean compose-env

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  \033[1mmake %-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# .venv holds exactly requirements/dev.lock (pinned, hash-checked), made from
# pyproject.toml and requirements/tools.in by `make lock`; the Dockerfile installs
# requirements/runtime.lock. LOCK_ARGS=--upgrade (or "-P fastapi") moves pins;
# without it, pins that still fit pyproject.toml are kept.
LOCKS := requirements/dev.lock requirements/runtime.lock
UV_COMPILE := $(VENV)/bin/uv pip compile --quiet --universal --python-version 3.11 \
	--generate-hashes --custom-compile-command "make lock" $(LOCK_ARGS)

$(VENV)/.installed: pyproject.toml $(LOCKS) deploy/local/venv.sh
	@deploy/local/venv.sh

venv: $(VENV)/.installed ## Install .venv from requirements/dev.lock (make up does it too)

lock: $(VENV)/.installed ## Re-pin requirements/*.lock after editing pyproject.toml, then install
	@$(UV_COMPILE) --extra dev pyproject.toml requirements/tools.in -o requirements/dev.lock
	@$(UV_COMPILE) pyproject.toml -c requirements/dev.lock -o requirements/runtime.lock
	@deploy/local/venv.sh

up: $(VENV)/.installed ## Install and start the stack and Nakhon's services in the background
	@$(STACK) up

down: ## Stop everything `make up` started (and nothing else)
	@$(STACK) down

status: ## What runs, on which port, which TimescaleDB edition
	@$(STACK) status

test: lint up ## Lint, start the stack, run unit and integration tests
	@$(PY) -m pytest

unit: $(VENV)/.installed ## Only the fast unit tests (no services needed)
	@$(PY) -m pytest -m "not integration" tests/unit

integration: up ## Only the integration tests (through the real stack)
	@$(PY) -m pytest -m integration

lint: $(VENV)/.installed ## ruff (lint + format check) and mypy --strict
	@$(VENV)/bin/ruff check nakhon tools tests
	@$(VENV)/bin/ruff format --check nakhon tools tests
	@$(VENV)/bin/mypy
	@$(VENV)/bin/lint-imports --no-cache

format: $(VENV)/.installed ## Apply ruff's fixes and formatting
	@$(VENV)/bin/ruff check --fix nakhon tools tests
	@$(VENV)/bin/ruff format nakhon tools tests

demo: up ## Start everything, simulate a city fleet for a minute, show what landed
	@$(STACK) status
	@echo "Publishing a simulated fleet of 300 sensors in six Thai cities for 60 s ..."
	@$(VENV)/bin/nakhon simulate --sensors 300 --interval 5 --duration 60 --summary

simulate: up ## Run the simulated fleet until Ctrl-C
	@$(VENV)/bin/nakhon simulate --duration 0

bench: up ## Measure end-to-end readings/s and latency against the raw ceilings
	@$(PY) -m tools.bench --json bench-results/bench.json

bench-scaling: up ## Throughput and CPU with 1-2 gateways and 1-3 processors (SCALING_ARGS=...)
	@$(PY) -m tools.bench.scaling --json bench-results/scaling.json $(SCALING_ARGS)

chaos: up ## Hurt one component mid-stream at a time; count what was stored (CHAOS_ARGS=--readings 5000)
	@$(PY) -m tools.chaos --json bench-results/chaos.json $(CHAOS_ARGS)

compose-env: ## Write .env with generated secrets for docker compose (once)
	@deploy/compose/env.sh

clean: down ## Stop the stack and delete its data (.nakhon/) and the virtualenv
	@for d in .nakhon/*; do [ -L "$$d" ] && rm -rf "$$(readlink -f "$$d")"; done; true
	rm -rf .nakhon $(VENV)
