"""Docstrings, comments and docs cite the project's files by path: each cited file exists."""

import re
import subprocess

from tests.conftest import ROOT

CITED = re.compile(
    r"\b(?:cqrs_site|reads|writes|consumers|deploy|tests|bench|docs)/[\w/.-]+\.(?:py|lua|md|cfg|conf|sh)\b"
)
# What a run writes, not what the repository holds.
OUTPUTS = ("bench/results/latest.",)


def test_every_file_the_project_cites_exists():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    missing = set()
    for name in tracked:
        if name.endswith((".py", ".lua", ".md", ".cfg", ".conf", ".sh")) and (ROOT / name).exists():
            for cited in CITED.findall((ROOT / name).read_text(errors="replace")):
                if not cited.startswith(OUTPUTS) and not (ROOT / cited).exists():
                    missing.add(f"{name}: {cited}")
    assert not missing, sorted(missing)
