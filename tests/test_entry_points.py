"""Entry points answer --help (and train.py Hydra's shell completion) without loading torch, fastai or matplotlib
(seconds of imports); help texts are plain text (no RST quotes) and complete sentences."""
import os
import re
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


@pytest.mark.parametrize("args,comp_line,expect", [
    (["--help"], "", "stem: conv2_s2, conv_stack"),  # every stem, from stems/manifest.json
    (["-sc", "install=bash"], "", "hydra_bash_completion"),
    (["-sc", "query=bash"], "python train.py stem=resnet_7x7 stem.k", "stem.kernel_size="),
])
def test_train_help_and_completion_load_no_torch(args, comp_line, expect):
    code = (f"import runpy, sys; sys.argv = ['train.py', *{args!r}]\n"
            f"try:\n    runpy.run_path('train.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            f"print('LOADED', *sorted(m for m in {HEAVY!r} if m in sys.modules))")
    env = {**os.environ, "COMP_LINE": comp_line}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    output, loaded = proc.stdout.rsplit("LOADED", 1)
    assert loaded.split() == [] and expect in output


@pytest.mark.parametrize("flags", [[], ["-q"]])
def test_pytest_with_the_projects_settings_prints_its_summary_line(tmp_path, flags):
    """`python -m pytest` and `pytest -q`, as users type them, end on the "N passed" line."""
    (tmp_path / "test_one.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path),
                           *flags, str(tmp_path / "test_one.py")], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert re.fullmatch(r"=* ?1 passed in [0-9.]+s ?=*", proc.stdout.strip().splitlines()[-1])
