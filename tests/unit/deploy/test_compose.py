"""deploy/compose.yaml cannot run here (no Docker engine); these checks keep it consistent with
the HAProxy config, the settings and the commands it names."""

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from deploy.localstack import haproxy_compose

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = yaml.safe_load((ROOT / "deploy/compose.yaml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = ["init", "read", "write", "consumer", "relay"]


def variables_the_code_reads() -> set[str]:
    sources = [*ROOT.glob("cqrs_site/settings/*.py"), *ROOT.glob("deploy/gunicorn_*.py")]
    names = set()
    for source in sources:
        names |= set(re.findall(r"""(?:environ\.get|env\.\w+|flag)\(\s*["']([A-Z_]+)["']""", source.read_text()))
    return names | {"DJANGO_SETTINGS_MODULE"}


def test_the_committed_haproxy_config_is_the_rendering_of_the_template():
    assert (ROOT / "deploy/haproxy.compose.cfg").read_text() == haproxy_compose()


def test_every_part_of_the_system_is_a_service():
    assert {"mongo", "kafka", "redis", "redis-replica", "haproxy", *APP_SERVICES} <= set(SERVICES)
    assert {"sentinel-1", "sentinel-2", "sentinel-3"} <= set(SERVICES)
    assert SERVICES["redis-replica"]["command"][-3:] == ["--replicaof", "redis", "6379"]
    assert "--replSet" in SERVICES["mongo"]["command"]
    assert "controller" in SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]


def test_haproxy_reaches_the_pools_where_they_listen():
    config = haproxy_compose()
    for pool in ("read", "write"):
        [target] = re.findall(rf"server-template {pool}- \S+ (\S+):(\d+)", config)
        host, port = target
        assert host in SERVICES, f"haproxy targets {host}, which is no service"
        assert SERVICES[host]["environment"]["GUNICORN_BIND"].endswith(f":{port}")
        assert f"deploy/gunicorn_{pool}.py" in SERVICES[host]["command"]
        assert SERVICES[host]["environment"]["DJANGO_SETTINGS_MODULE"] == f"cqrs_site.settings.{pool}"


def test_haproxy_publishes_the_ports_it_binds():
    haproxy = SERVICES["haproxy"]
    published = {mapping.split(":")[1] for mapping in haproxy["ports"]}
    for variable in ("HAPROXY_BIND", "HAPROXY_STATS_BIND"):
        assert f"${{{variable}}}" in haproxy_compose()
        assert haproxy["environment"][variable].rsplit(":", 1)[1] in published
    mounts = {volume.split(":")[0] for volume in haproxy["volumes"]}
    assert {"./haproxy.compose.cfg", "./haproxy-errors"} <= mounts
    for errorfile in re.findall(r"errorfile \d+ (\S+)", haproxy_compose()):
        assert (ROOT / errorfile).exists()


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_set_only_variables_the_code_reads_and_point_at_services(service):
    environment = SERVICES[service]["environment"]
    unknown = set(environment) - variables_the_code_reads()
    assert not unknown, f"{service} sets variables nothing reads: {unknown}"
    for variable in ("MONGODB_URI", "DATABASE_URL"):
        assert urlsplit(environment[variable]).hostname in SERVICES
    assert environment["KAFKA_BOOTSTRAP_SERVERS"].split(":")[0] in SERVICES
    # Redis under Sentinel: REDIS_URL names the service the sentinels monitor, and each is a service.
    assert environment["REDIS_TOPOLOGY"] == "sentinel"
    service = environment["REDIS_SENTINEL_SERVICE"]
    assert urlsplit(environment["REDIS_URL"]).hostname == service
    for address in environment["REDIS_SENTINELS"].split(","):
        host, port = address.split(":")
        command = " ".join(SERVICES[host]["command"])
        assert f"port {port}" in command and f"sentinel monitor {service} redis 6379 2" in command


@pytest.mark.parametrize("service", ["init", "consumer", "relay"])
def test_the_management_commands_named_exist(service):
    command = " ".join(SERVICES[service]["command"])
    for name in re.findall(r"manage\.py (\w+)", command):
        found = list(ROOT.glob(f"*/management/commands/{name}.py"))
        assert found or name == "migrate", f"{service} runs manage.py {name}, which does not exist"


def test_the_committed_edge_routes_are_the_ones_reads_routes_declares():
    from reads.routes import edge_routes_lua

    assert (ROOT / "deploy/edge_routes.lua").read_text() == edge_routes_lua(), "run: manage.py edge_routes"


def test_compose_mounts_every_lua_file_haproxy_loads():
    loaded = re.findall(r"lua-load-per-thread (\S+)", (ROOT / "deploy/haproxy.cfg").read_text())
    # ... and those the edge opens itself, relative to its own directory (deploy/).
    opened = re.findall(r'lua_dir \.\. "/([^"]+)"', (ROOT / "deploy/edge.lua").read_text())
    loaded += [str(Path("deploy", path)).replace("deploy/../", "") for path in opened]
    mounts = " ".join(SERVICES["haproxy"]["volumes"])
    assert len(loaded) >= 4 and all(f"/usr/local/etc/haproxy/{path}:" in mounts for path in loaded), loaded
    for volume in SERVICES["haproxy"]["volumes"]:
        assert (ROOT / "deploy" / volume.split(":")[0]).exists(), volume


def test_the_edge_reads_a_replica_that_is_a_service():
    edge = urlsplit(SERVICES["haproxy"]["environment"]["EDGE_REDIS_URL"])
    assert edge.hostname == "redis-replica" and edge.hostname in SERVICES
