"""What `up` saves of the stack: later callers (`make restart`, the bench, the tests) see the
stack as `up` started it, whatever their own environment holds."""

from deploy.localstack import Stack


def test_haproxys_edge_settings_are_the_ones_up_saw(tmp_path, monkeypatch):
    monkeypatch.setenv("CQRS_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("CQRS_CACHE_PREFIX", "seen-by-up")
    monkeypatch.setenv("EDGE_HIT_LOG_PERCENT", "7")
    Stack.from_env().save_shape()

    monkeypatch.setenv("CQRS_CACHE_PREFIX", "another")
    monkeypatch.delenv("EDGE_HIT_LOG_PERCENT")
    env = Stack.from_env().haproxy().env
    assert (env["CQRS_CACHE_PREFIX"], env["EDGE_HIT_LOG_PERCENT"]) == ("seen-by-up", "7")
