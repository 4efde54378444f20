"""`make help` lists every target of the Makefile, from the targets' own `## description` comments."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

MAKEFILE = Path(__file__).resolve().parents[1] / "Makefile"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_help_lists_every_target():
    text = MAKEFILE.read_text()
    rules = set(re.findall(r"^([a-z][\w-]*)\s*:(?!=)", text, re.M))
    phony = set(" ".join(re.findall(r"^\.PHONY:(.*(?:\\\n.*)*)", text, re.M)).replace("\\", " ").split())
    assert phony <= rules, f"phony targets without a rule: {phony - rules}"
    shown = subprocess.run(["make", "-s", "help"], cwd=MAKEFILE.parent, capture_output=True, text=True, check=True)
    listed = {line.split()[1] for line in shown.stdout.splitlines() if line.strip().startswith("make ")}
    assert rules == listed, f"missing from make help: {rules - listed}; not targets: {listed - rules}"
