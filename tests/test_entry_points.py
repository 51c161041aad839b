"""Entry points answer --help without loading torch, fastai or matplotlib (seconds of imports); help texts are
plain text (no RST quotes) and complete sentences."""
import subprocess
import sys

import pytest

from tests.conftest import ROOT

HEAVY = ("torch", "fastai", "matplotlib", "pandas")


@pytest.mark.parametrize("module,args", [
    ("analyze", []), ("analyze", ["profile"]), ("analyze", ["report"]), ("analyze", ["space"]), ("analyze", ["evaluate"]),
    ("analyze", ["export"]), ("analyze", ["dashboard"]), ("stems", []), ("stems", ["list"]), ("stems", ["match"]),
])
def test_help_loads_nothing_heavy(module, args):
    code = (f"import runpy, sys; sys.argv = ['{module}', *{args!r}, '--help']\n"
            f"try:\n    runpy.run_module('{module}', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            f"print('LOADED', *sorted(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    help_text, loaded = proc.stdout.rsplit("LOADED", 1)
    assert loaded.split() == [] and "usage:" in help_text
    assert "``" not in help_text
    # the description and the epilog are whole sentences (a first line cut from a docstring is not)
    prose = [p for p in help_text.strip().split("\n\n") if not p.startswith(("usage:", "positional arguments:", "options:"))]
    assert all(p.rstrip().endswith(".") for p in prose), prose
