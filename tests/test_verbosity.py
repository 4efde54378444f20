"""Quiet by default, loud with -v: third-party warnings and Lightning's INFO tips are hidden, ours are not."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys, types, warnings
from text2earth.core.verbosity import configure_console, quiet_lightning, trainer_console_options
configure_console(loud=sys.argv[1] == "loud")
third = types.ModuleType("somelib")
exec("import warnings\\ndef f():\\n    warnings.warn('somelib is deprecated', DeprecationWarning)", third.__dict__)
third.f()
exec("import warnings\\nwarnings.warn('text2earth says so', UserWarning)", {"__name__": "text2earth.apps.x"})
from lightning.pytorch.utilities.rank_zero import rank_zero_info
quiet_lightning()
rank_zero_info("Tip: try litlogger")
print(trainer_console_options({"enable_progress_bar": True}))
"""


@pytest.mark.parametrize("mode", ["quiet", "loud"])
def test_third_party_noise_only_with_v(mode):
    env = {k: v for k, v in os.environ.items() if k not in ("TEXT2EARTH_VERBOSE", "PYTHONWARNINGS")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-W", "default", "-c", SCRIPT, mode], capture_output=True, text=True, env=env, check=True
    )
    assert "text2earth says so" in proc.stderr  # our own warnings always show
    assert ("somelib is deprecated" in proc.stderr) == (mode == "loud")
    assert ("litlogger" in proc.stderr) == (mode == "loud")
    # off a terminal: no progress bar; the summary only with -v; a trainer config's own choice is kept
    assert proc.stdout.strip() == f"{{'enable_model_summary': {mode == 'loud'}}}"
