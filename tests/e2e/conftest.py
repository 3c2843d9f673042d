import pytest

from tests.stackctl import stack_start, stack_stop


@pytest.fixture(scope="module")
def stack(request, tmp_path_factory):
    """`make up`'s launcher on free ports (2 read, 1 write instance, 2 consumers), reusing the
    suite's Redis, MongoDB and Kafka; `make down` at the end must leave no process behind.
    One per test module, each with a consumer group of its own: Tansu may never assign
    partitions to members that join a group right after two others left it."""
    module = request.module.__name__.rsplit(".", 1)[-1]
    running = stack_start(tmp_path_factory.mktemp("stack"), own_servers=False, group_suffix=f"-{module}")
    yield running
    try:
        running.heal()
    finally:  # whatever heal found, nothing of the stack may be left running
        stack_stop(running)
