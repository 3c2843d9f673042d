"""The running stack against its own OpenAPI description: schemathesis, through HAProxy."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "schemathesis"


def test_every_answer_of_the_running_stack_matches_its_openapi_schema(stack):
    """Generated requests (schema-valid and not) to every operation, a few hundred in all, each
    held to every schemathesis check: no 5xx, only documented statuses, bodies and headers as
    documented, invalid input refused, valid input accepted. tests/e2e/schemathesis.toml lists
    the exceptions and why. The seed is fixed so a failure reproduces; SCHEMATHESIS_SEED varies it."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    token = stack.writer.headers["Authorization"]
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file",
            str(ROOT / "tests/e2e/schemathesis.toml"),
            "run",
            f"{stack.url}/api/schema/",
            "--url",
            stack.url,
            "--header",
            f"Authorization: {token}",
            "--checks",
            "all",
            "--exclude-checks",
            "use_after_free",
            "--max-examples",
            "30",
            "--seed",
            os.environ.get("SCHEMATHESIS_SEED", "1"),
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--report",
            "junit",
            "--report-dir",
            str(ARTIFACTS),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", output)
    assert generated and int(generated[1]) >= 300 and generated[1] == generated[2], output[-2000:]


def test_the_schema_and_the_swagger_ui_are_served_with_their_assets_from_this_host(stack):
    schema = requests.get(stack.url + "/api/schema/?format=json", timeout=10)
    assert schema.status_code == 200 and schema.headers["X-Served-By"] == "write-pool"
    assert {"/api/posts/{post_id}", "/api/users"} <= set(schema.json()["paths"])

    page = requests.get(stack.url + "/api/docs/", timeout=10)
    assert page.status_code == 200 and "swagger-ui" in page.text
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert assets, page.text[:500]
    for asset in assets:  # no CDN: the machines that run this may have no internet access
        assert requests.get(stack.url + asset, timeout=10).status_code == 200, asset
