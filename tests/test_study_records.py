"""Committed studies regenerate from the records beside them: a small fixture study (tests/fixtures/small_study,
made from test_report's controlled records) and every docs/studies/<study>/ with records; the README's study
numbers are the reports' (python -m analyze readme)."""
import shutil
from pathlib import Path

import pytest

from analyze import __main__ as cli
from analyze.report import readme

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "small_study"


def table_lines(report: Path) -> list[str]:
    return [line for line in report.read_text(encoding="utf-8").splitlines() if line.startswith("|")]


def regenerate(folder: Path, tmp_path: Path) -> Path:
    """The study's records alone, copied to a fresh folder, and the report made from them there."""
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy, ignore=lambda d, names: [n for n in names if n == "report.md" or n.endswith(".png")])
    assert cli.main(["report", str(copy)]) == 0
    return copy / "report.md"


def committed_studies() -> list[Path]:
    return [FIXTURE] + sorted(p.parent for p in (ROOT / "docs" / "studies").glob("*/report.md")
                              if any(p.parent.rglob("result.json")))


@pytest.mark.parametrize("folder", committed_studies(), ids=lambda p: p.name)
def test_a_committed_study_regenerates_its_tables_byte_for_byte(folder, tmp_path):
    regenerated = table_lines(regenerate(folder, tmp_path))
    assert regenerated and regenerated == table_lines(folder / "report.md")


def committed_space_studies() -> list[Path]:
    return sorted(p.parent for p in (ROOT / "docs" / "studies").glob("*/space.md"))


@pytest.mark.parametrize("folder", committed_space_studies(), ids=lambda p: p.name)
def test_a_committed_design_space_study_regenerates_byte_for_byte(folder, tmp_path):
    generated = ("space.md", "stems.yaml")
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy, ignore=lambda d, names: [n for n in names if n in generated or n.endswith(".png")])
    assert cli.main(["space", str(copy)]) == 0
    assert table_lines(copy / "space.md") == table_lines(folder / "space.md")
    assert (copy / "stems.yaml").read_text() == (folder / "stems.yaml").read_text()


def test_every_committed_study_ships_its_records():
    reports = [p for p in (ROOT / "docs" / "studies").glob("*/*.md") if p.name in ("report.md", "space.md")]
    assert reports and [p.parent.name for p in reports if not any(p.parent.rglob("result.json"))] == []


def test_the_fixture_shows_the_controlled_verdicts():
    text = (FIXTURE / "report.md").read_text(encoding="utf-8")
    assert "Reference: **`resnet_7x7`** (compare.reference)" in text
    assert "| equivalent (±1 pt) |" in text and "| worse |" in text and "| inconclusive |" in text


def test_readme_study_numbers_are_the_reports(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert cli.main(["readme", "--check", "README.md"]) == 0, "run: python -m analyze readme --write README.md"


def test_readme_block_is_written_checked_and_its_markers_required(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    stale = tmp_path / "README.md"
    stale.write_text(f"# x\n\n{readme.START}\nold numbers\n{readme.END}\nafter\n")
    assert cli.main(["readme", "--check", str(stale)]) == 1
    assert "stale; regenerate it with `python -m analyze readme --write README.md`" in capsys.readouterr().out
    assert cli.main(["readme", "--write", str(stale)]) == 0 and cli.main(["readme", "--check", str(stale)]) == 0
    text = stale.read_text()
    assert text.startswith("# x\n\n") and text.endswith(f"{readme.END}\nafter\n") and "old numbers" not in text
    bare = tmp_path / "bare.md"
    bare.write_text("no markers\n")
    assert cli.main(["readme", "--write", str(bare)]) == 2 and bare.read_text() == "no markers\n"
    assert "needs one <!-- studies:summary:start --> line" in capsys.readouterr().err
