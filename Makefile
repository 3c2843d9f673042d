# The two commands: `make up` (the whole stack on embedded defaults) and `make test`.
PY := .venv/bin/python
REDIS_TOPOLOGY ?= single
export PORT READ_INSTANCES WRITE_INSTANCES CONSUMERS MONITORING REDIS_TOPOLOGY

.PHONY: install install-test install-bench up down status restart logs test bench lint format lock

# What the stack needs (`make up MONITORING=1` adds Prometheus); tests and the bench add their tools.
install:
	@bash deploy/install.sh $(if $(filter 1,$(MONITORING)),monitoring,stack)

install-test:
	@bash deploy/install.sh test

install-bench:
	@bash deploy/install.sh bench

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

# The whole suite on one Redis, then the suites of the read side (cache, consumer, feeds, edge)
# again on a primary and a replica under Sentinel (REDIS_TOPOLOGY=sentinel) and on a six-node
# Redis Cluster (REDIS_TOPOLOGY=cluster). The failover fault tests of both are in the whole
# suite (tests/faults/test_redis_failover.py).
TOPOLOGY_SUITES ?= tests/integration/reads tests/integration/consumers tests/e2e/test_edge.py
test: install-test
	$(PY) -m pytest $(PYTEST_ARGS)
	$(if $(TOPOLOGY_SUITES),REDIS_TOPOLOGY=sentinel $(PY) -m pytest $(PYTEST_ARGS) $(TOPOLOGY_SUITES))
	$(if $(TOPOLOGY_SUITES),REDIS_TOPOLOGY=cluster $(PY) -m pytest $(PYTEST_ARGS) $(TOPOLOGY_SUITES))

# Not part of `make test`: starts its own stack on free ports, loads it, writes bench/results/.
bench: install-bench
	$(PY) -m bench.run $(BENCH_ARGS)

lint: install-test
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	.venv/bin/lint-imports

format: install-test
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# After a change to requirements*.in: the locked sets, with hashes (pip-tools).
lock: install-test
	for set in requirements requirements-local requirements-dev; do \
	  .venv/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	    --no-emit-find-links -o $$set.txt $$set.in; done
