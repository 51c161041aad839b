"""The documentation: the site builds offline with `mkdocs build --strict` (a broken link, anchor or API reference
fails it), its generated blocks match their sources, and every command shown in a fenced bash block of the README or
a page runs: a `python train.py` command composes and passes the checks a run makes before it starts (every point of
a sweep), a `python -m stems|analyze` command's `--help` answers (and `analyze profile`'s overrides compose), and the
other tools exist as named."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from analyze.__main__ import main as analyze_main
from experiments.config import check_command_line, compose
from stems.__main__ import main as stems_main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]  # docs/studies/ holds generated reports
FENCE = re.compile(r"^```bash\n(.*?)^```", re.M | re.S)


def shown_commands() -> list[tuple[str, str]]:
    """(page, command) for every command of every fenced bash block: comments dropped, `a && b` split in two."""
    found = []
    for page in PAGES:
        for block in FENCE.findall(page.read_text(encoding="utf-8")):
            for line in block.splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                found += [(page.name, part.strip()) for part in line.split(" && ") if part.strip()]
    return found


def test_the_site_builds_offline_with_every_link_and_reference_resolved(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    assert "stems.registry.register" in api and "stems.layers.output_widths" in api  # mkdocstrings rendered the API
    assert (tmp_path / "site" / "benchmarks" / "index.html").read_text(encoding="utf-8").count("<tr>") > 20  # RESULTS.md


def test_the_generated_blocks_of_the_pages_are_current():
    assert analyze_main(["config-docs", "--check", "docs/configuration.md"]) == 0, \
        "run: python -m analyze config-docs --write docs/configuration.md"
    assert analyze_main(["readme", "--check", "docs/index.md"]) == 0, "run: python -m analyze readme --write docs/index.md"


def test_the_configuration_reference_lists_every_key_of_the_schema():
    from experiments import schema

    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for cls in (schema.TrainConf, schema.WandbConf, schema.ImagenetteConf, schema.ProfileConf, schema.CompareConf):
        for key in cls.__dataclass_fields__:
            assert key == "name" or f"| `{key}` |" in text, (cls.__name__, key)
    assert "| `lr` | float | `0.004` | a number > 0 | the one-cycle schedule's peak |" in text


def test_every_page_states_a_bash_block_and_the_readme_keeps_the_two_commands():
    commands = shown_commands()
    assert {page for page, _ in commands} >= {"README.md", "getting-started.md", "configuration.md", "sweeps.md"}
    readme = [c for page, c in commands if page == "README.md"]
    assert readme == ["pip install -e .", "python train.py", 'pip install -e ".[test]"', "python -m pytest"]


def check(command: str) -> None:
    """Run the check a shown command gets; an unknown kind of command fails, so a new one gets a check too."""
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # an environment assignment before the command
        words = words[1:]
    if words[:2] == ["pip", "install"] and "--index-url" in words:  # the project's own dependencies from another index
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        names = {re.match(r"[\w-]+", d)[0] for d in project["dependencies"]}
        assert set(words[2:words.index("--index-url")]) <= names and words[-1].startswith("https://download.pytorch.org/"), command
    elif words[:2] == ["pip", "install"]:
        extras = re.fullmatch(r"-e \.(?:\[(\w+)\])?", " ".join(words[2:]))
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        assert extras and (extras[1] is None or extras[1] in project["optional-dependencies"]), command
    elif words[:3] == ["python", "-m", "pytest"]:
        markers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
        named = words[words.index("-m", 3) + 1:][:1] if "-m" in words[3:] else []
        assert all(any(m.startswith(f"{n}:") for m in markers) for n in named), command
    elif words[:2] == ["python", "train.py"]:
        args = words[2:]
        if args in (["--help"], ["-sc", "install=bash"]):
            proc = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0 and proc.stdout, (command, proc.stderr[-2000:])
        else:
            multirun = "-m" in args
            assert check_command_line([a for a in args if a != "-m"], multirun=multirun) >= 1, command
    elif words[:3] in (["python", "-m", "stems"], ["python", "-m", "analyze"]):
        main = stems_main if words[2] == "stems" else analyze_main
        with pytest.raises(SystemExit) as done:
            main([words[3], "--help"])
        assert done.value.code == 0, command
        if words[3] == "profile":
            compose([w for w in words[4:] if "=" in w and not w.startswith("-")])
    elif words[:2] == ["sudo", "cluster/start.sh"]:
        assert (ROOT / "cluster" / "start.sh").stat().st_mode & 0o111, command
    elif words[0] == "find" and words[-4:-2] == ["wandb", "sync"]:
        from wandb.cli.cli import cli

        assert "sync" in cli.commands, command
    else:
        raise AssertionError(f"no check for the shown command {command!r}; add one to tests/test_docs.py")


def sweep_is_slow(page: str, command: str):
    """A shown sweep checks every point it expands to (seconds each on 2 loaded cores): marked slow."""
    return pytest.param(page, command, marks=pytest.mark.slow if command.startswith("python train.py -m ") else ())


@pytest.mark.parametrize("page, command", [sweep_is_slow(p, c) for p, c in shown_commands()])
def test_every_shown_command_runs_or_composes(page, command):
    check(command)
