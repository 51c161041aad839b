"""The last step of benchmarks/gpu_run.sh: summary.md from what the steps wrote (steps.tsv, versions.json, the run
records, speed.md, the profiles' totals, shapes.md, the study's records and report.md), ready to paste into
benchmarks/RESULTS.md. Reads only; a step that wrote nothing is said to have written nothing.

    python benchmarks/gpu_summary.py WORK OUTDIR --mode gpu|dry-run --started EPOCH_S --command "bash …"
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analyze.__main__ import summary_lines  # noqa: E402
from experiments.record import read_record  # noqa: E402
from stems.base import atomic_write  # noqa: E402

HEAD_LINES = 40  # of shapes.md and report.md: their opening tables; the whole files are in gpu_run.tar.gz


def steps_table(tsv: Path) -> list[str]:
    lines = ["| step | status | s | note |", "|---|---|---:|---|"]
    for row in tsv.read_text().splitlines():
        name, status, secs, note = (row.split("\t") + ["", "", ""])[:4]
        lines.append(f"| {name} | {status} | {secs} | {note.replace('|', '/')} |")
    return lines


def machine(work: Path) -> list[str]:
    path = work / "versions.json"
    if not path.is_file():
        return ["versions: not recorded (the versions step wrote nothing)"]
    v = json.loads(path.read_text())
    gpu = f"{v['gpu']} (sm {v['gpu_capability']}, {v['gpu_memory_gib']} GiB)" if v["gpu"] else "no CUDA GPU"
    lines = [f"- device: {gpu}; nvidia-smi: {v['nvidia_smi'] or '–'}",
             f"- torch {v['torch']}, CUDA {v['cuda']}, cuDNN {v['cudnn']}, Python {v['python']}, {v['platform']}",
             "- " + ", ".join(f"{k} {val}" for k, val in v["packages"].items() if k != "torch"),
             f"- commit {v['commit'] or 'unknown (no git on the machine)'}"]
    if v["missing"]:
        lines.append(f"- missing packages: {', '.join(v['missing'])}")
    return lines


def run_line(name: str, folder: Path) -> str:
    record = read_record(folder / "result.json")
    if not isinstance(record, dict):
        return f"- {name}: no record ({record.reason if hasattr(record, 'reason') else 'not written'})"
    hw, m, cfg = record["hardware"], record.get("metrics") or {}, record["config"]
    line = (f"- {name}: {record['status']}; {cfg['stem']['name']} + {cfg['trunk']['name']} on {cfg['data']['name']}, "
            f"{hw['device']} {hw['precision']}{', channels_last' if hw['channels_last'] else ''}")
    if m:
        line += (f"; valid acc {100 * (m.get('valid_acc') or 0):.1f} %, {m.get('train_img_s') or 0:,.0f} img/s, "
                 f"MFU {100 * (m.get('mfu') or 0):.1f} %")
    if record.get("stem_match"):
        sm = record["stem_match"]
        line += (f"; stem.match={sm.get('target_spec')}: widths {record['config']['stem'].get('widths')}, "
                 f"{sm.get('achieved_value', 0) * 1e3:.3f} ms for a target of {sm.get('target_value', 0) * 1e3:.3f} ms")
    return line


def gpu_paths(work: Path) -> list[str]:
    lines = []
    log = work / "logs" / "cuda_tests.log"
    if log.is_file():
        tail = [ln for ln in log.read_text().splitlines() if ln.strip()]
        lines.append(f"- cuda_tests (pytest -m gpu): {tail[-1] if tail else 'no output'}")
    for name in ("train_default", "train_imagenette"):
        if (work / name).is_dir():
            lines.append(run_line(name, work / name))
    return lines or ["nothing ran"]


def profiles(work: Path) -> list[str]:
    lines = []
    for totals_file in sorted((work / "profile").glob("*/totals.json")):
        saved = json.loads(totals_file.read_text())
        batch = int(saved["meta"]["input_shape"][0])  # the profile's totals are per batch
        lines += [f"**{totals_file.parent.name}**", ""] + [f"- {ln}" for ln in summary_lines(saved["totals"], batch)]
        groups = totals_file.parent / "groups.csv"
        if groups.is_file():
            import pandas as pd

            table = pd.read_csv(groups)
            keep = [c for c in ("group", "flops_fwd", "bytes_moved", "ms_fwd", "ms_bwd", "share_flops", "share_time",
                                "share_time_train") if c in table]
            lines += ["", table[keep].to_markdown(index=False, floatfmt=".3g")]
        lines.append("")
    return lines or ["no profile written"]


def head(path: Path) -> list[str]:
    if not path.is_file():
        return [f"{path.name}: not written"]
    text = path.read_text().splitlines()
    return text[:HEAD_LINES] + ([f"… ({len(text) - HEAD_LINES} more lines in gpu_run.tar.gz: "
                                 f"{path.relative_to(path.parents[1])})"] if len(text) > HEAD_LINES else [])


def study(work: Path) -> list[str]:
    records = [read_record(p) for p in sorted((work / "study").glob("**/result.json"))]
    statuses = Counter(r["status"] if isinstance(r, dict) else "unreadable" for r in records)
    stems = sorted({r["config"]["stem"]["name"] for r in records if isinstance(r, dict) and r["status"] == "completed"})
    lines = [f"- points: {len(records)} recorded ({', '.join(f'{n} {s}' for s, n in statuses.items()) or 'none'}); "
             f"stems completed: {', '.join(stems) or 'none'}", ""]
    return lines + head(work / "report" / "report.md")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--mode", choices=["gpu", "dry-run"], required=True)
    ap.add_argument("--started", type=float, required=True, help="the run's start, seconds since the epoch")
    ap.add_argument("--command", required=True, help="the command that made the run")
    args = ap.parse_args()
    work = args.work
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(args.started))
    lines = [f"# GPU run of benchmarks/gpu_run.sh ({args.mode}), {when}, {time.time() - args.started:.0f} s", "",
             f"Command: `{args.command}`", "", *machine(work), "", "## Steps", "", *steps_table(args.out / "steps.tsv"), "",
             "## 1. Every GPU path once", "", *gpu_paths(work), "",
             "## 2. Speed: stemlab's step vs plain PyTorch", "", *head(work / "speed" / "speed.md"), "",
             "## 3. Per-layer time", "", *profiles(work), "",
             "## 4. Layer shapes", "", *head(work / "shapes" / "shapes.md"), "",
             "## 5. Stem study (conf/experiment/stem_study_imagenette128_gpu.yaml)", "", *study(work), ""]
    atomic_write(args.out / "summary.md", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
