# The two commands: `make up` (the whole stack on embedded defaults) and `make test`.
PY := .venv/bin/python
export PORT READ_INSTANCES WRITE_INSTANCES CONSUMERS

.PHONY: install up down status restart logs test bench lint format

install:
	@bash deploy/install.sh

up: install
	@$(PY) -m deploy.localstack up

down:
	@$(PY) -m deploy.localstack down

status:
	@$(PY) -m deploy.localstack status

logs:
	@$(PY) -m deploy.localstack logs

# `make restart NAME=consumer-1`: one program of the running stack.
restart:
	@$(PY) -m deploy.localstack restart $(NAME)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# Not part of `make test`: starts its own stack on free ports, loads it, writes bench/results/.
bench: install
	$(PY) -m bench.run $(BENCH_ARGS)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	.venv/bin/lint-imports

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .
