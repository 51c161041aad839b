"""``python -m analyze readme [--write FILE | --check FILE]``: the README's study numbers, read from the committed
reports (docs/studies/*/report.md), so that the README never says what no report shows.

The block between <!-- studies:summary:start --> and <!-- studies:summary:end --> holds, per committed stem study,
its scope (budget, what was held fixed, the smallest detectable difference, what it cannot show), its stem table's
main columns copied cell for cell, how many comparisons it decided, its power line, the stem's share of a training step's FLOPs
and time (from its compute-by-depth table), and what the report cannot claim (the older protocol, no records
beside it); for a study across contexts, its answer instead (across.readme_lines: what held in every context, what
flipped, Kendall's τ with its interval). --check exits 1 when FILE's block differs from the reports (a test runs it
on README.md)."""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from stems.base import StemlabError, atomic_write, replace_between


START, END = "<!-- studies:summary:start -->", "<!-- studies:summary:end -->"
STUDIES = Path("docs/studies")
COMMAND = "python -m analyze readme --write README.md"
# the stem table's columns the README shows, when the report has them (older reports: Δ vs the best stem)
COLUMNS = ("stem", "accuracy (mean ± 95 % CI)", "seeds", "lr", "P(best)", "Δ vs reference (pp, adjusted CI)",
           "Δ vs best (pp, 95 % CI)", "p (Holm; raw)", "verdict", "at ref. time", "ms / train step", "ms / step (training)")
DETAILS = "Details per stem:"  # the line above a report's details table (where a tuned study's lr column is)


def tables(lines: list[str]) -> list[tuple[int, list[list[str]]]]:
    """(first line index, rows of cells) of every markdown table in `lines`; the alignment row dropped."""
    out, i = [], 0
    while i < len(lines):
        if lines[i].startswith("|"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            rows = [[c.strip() for c in row.strip().strip("|").split(" | ")] for row in lines[i:j]]
            out.append((i, [rows[0], *rows[2:]]))
            i = j
        else:
            i += 1
    return out


def share_range(depth: list[list[str]], column: int, part: str = "stem") -> str:
    """'lo–hi' of one part's (the stem, stage4, ...) FLOPs (column 0) or time (1) share over the rows of `depth`
    ('a → b' cells)."""
    values = []
    at = depth[0].index(part, 1)
    for row in depth[1:]:
        parts = row[at].split(" → ")
        if len(parts) == 2 and re.fullmatch(r"[\d.]+", parts[column]):
            values.append(float(parts[column]))
    return f"{min(values):.1f}–{max(values):.1f} %" if values else "–"


def with_lr(main: list[list[str]], details: list[list[str]] | None) -> list[list[str]]:
    """The main table with the details table's lr column (a tuned study's) after its seeds, matched by stem."""
    if not details or "lr" not in details[0] or "lr" in main[0]:
        return main
    lr = {row[0]: row[details[0].index("lr")] for row in details}
    at = main[0].index("seeds") + 1
    return [[*row[:at], lr.get(row[0], "–"), *row[at:]] for row in main]


def study_summary(report: Path) -> list[str]:
    """The README's lines for one committed report: per study section, its table and what it can claim."""
    from experiments.record import RESULT_FILE

    from .across import HEADING, readme_lines  # pandas, matplotlib: loaded when the command runs, so --help answers at once
    from .render import md_table
    from .scope import HEADING as SCOPE

    text = report.read_text(encoding="utf-8")
    folder = report.parent
    has_records = any(folder.rglob(RESULT_FILE))
    across = next((s for s in text.split("\n## ")[1:] if s.startswith(HEADING)), None)
    if across is not None:  # a study across contexts: its answer stands for its per-context tables
        return [f"**{HEADING}** (`{report.as_posix()}`" + ("" if has_records else
                "; its records are not beside it, so it cannot be regenerated from this repository") + "):", "",
                *readme_lines(across)]
    out = []
    for section in text.split("\n## ")[1:]:
        lines = section.splitlines()
        found = tables(lines)
        stem_tables = [rows for _, rows in found if rows[0][:2] == ["stem", "accuracy (mean ± 95 % CI)"]]
        if not stem_tables:
            continue
        rows = with_lr(stem_tables[0], next((rows for i, rows in found if i > 1 and lines[i - 2] == DETAILS), None))
        keep = [rows[0].index(c) for c in COLUMNS if c in rows[0]]
        head = [rows[0][k] for k in keep]
        new_protocol = "Δ vs reference (pp, adjusted CI)" in head
        reference = next((ln for ln in lines if ln.startswith("Reference: ")), "")
        power = next((ln for ln in lines if ln.startswith("Power: ")), "")
        decided = next((ln for ln in lines if ln.startswith("Decided: ")), "")
        scope = lines[lines.index(SCOPE):lines.index("", lines.index(SCOPE))] if SCOPE in lines else []  # to its blank line
        caveats = []
        if not new_protocol:
            caveats.append("the protocol before a named reference: each stem against the best of the same data, Holm-adjusted "
                           "p beside unadjusted intervals; \"≈ best\" means only \"not shown worse\"")
        if not has_records:
            caveats.append("its records are not beside it, so it cannot be regenerated from this repository")
        depth = next((rows for i, rows in found if i > 0 and "Compute by depth, share of FLOPs" in lines[i - 2]), None)
        out += [f"**{lines[0]}** (`{report.as_posix()}`" + (f"; {'; '.join(caveats)}" if caveats else "") + "):", ""]
        if reference:
            out += [reference, ""]
        if scope:
            out += [*scope, ""]
        out += [md_table(head, "".join("l" if h in ("stem", "verdict") else "r" for h in head), [[r[k] for k in keep] for r in rows[1:]]), ""]
        out += [text for line in (decided, power) if line for text in (line, "")]
        if depth:
            out += [f"The stem's share of a training step: {share_range(depth, 0)} of the FLOPs, {share_range(depth, 1)} of "
                    f"the measured time; stage 4's: {share_range(depth, 0, 'stage4')} of the FLOPs, "
                    f"{share_range(depth, 1, 'stage4')} of the time (over these stems, from the report's compute-by-depth "
                    "table).", ""]
    return out


def block(root: Path = Path(".")) -> str:
    lines = []
    for report in sorted((root / STUDIES).glob("*/report.md")):
        lines += study_summary(report.relative_to(root) if root != Path(".") else report)
    lines.append(f"Generated from the committed reports by `{COMMAND}`.")
    return "\n".join(lines)


def add_readme_parser(sub: Any) -> None:
    add_block_parser(sub, "readme", "the README's study numbers, from the committed reports", __doc__, run_readme)


def add_block_parser(sub: Any, name: str, help_text: str, doc: str | None, func: Any) -> None:
    """The subcommand `name` that prints a generated block, or writes (--write FILE) or checks (--check FILE) it."""
    p = sub.add_parser(name, help=help_text, description=doc.split("\n\n")[0] if doc else None)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="FILE", help="replace the block between the markers in FILE")
    group.add_argument("--check", metavar="FILE", help="exit 1 when the block in FILE is stale")
    p.set_defaults(func=func)


def run_readme(args: argparse.Namespace) -> int:
    return write_or_check_block(args, block(), START, END, "study summary", COMMAND)


def write_or_check_block(args: argparse.Namespace, new_block: str, start: str, end: str, what: str, command: str) -> int:
    """Print `new_block`, or put it between the markers of --write FILE, or (--check FILE) exit 1 when FILE's block
    differs from it, naming `command`, which regenerates it."""
    if not (args.write or args.check):
        print(new_block)
        return 0
    path = Path(args.write or args.check)
    if not path.is_file():
        raise StemlabError(f"{path} is not a file; pass the file that holds the {what}, e.g. --check {command.split()[-1]}.")
    text = path.read_text(encoding="utf-8")
    updated = replace_between(text, start, end, new_block, str(path), what)
    if args.check:
        if updated != text:
            print(f"{path}'s {what} is stale; regenerate it with `{command}`.")
            return 1
        return 0
    atomic_write(path, updated)
    return 0
