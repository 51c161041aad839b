"""``python -m analyze report DIR [--out DIR] [--wandb PROJECT [--group G]]``: the stem study's answer.

Reads every result record under DIR (recursively; or W&B runs with ``--wandb``), splits them into studies
(records whose config differs only in the stem and the seed; mixed trunks or datasets are never averaged
together), and writes ``report.md`` with PNG figures beside it:

- per stem: accuracy mean ± 95 % CI over seeds (Student's t), seeds, params, GFLOPs, stem share of FLOPs
  and time, ms per train step, img/s; the best stem, and the stems whose difference from it is within
  noise by a paired t-test over seeds (``scipy.stats.ttest_rel``, two-sided, α = 0.05);
- accuracy vs train-step time and vs FLOPs with the Pareto front; compute by depth; training curves;
- the hardware, software versions and config the records were made with; missing, failed and skipped points.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

RECORD_NAME = "result.json"
ALPHA = 0.05
STAGES = ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
NOT_STUDY_KEYS = ("stem", "seed", "logger")  # what varies inside one study, or does not change the result
TIMED = ("stem_share_time", "train_img_s", "ms_train_step", "ms_fwd")  # reported as medians over seeds
ENV_KEYS = ("python", "torch", "torchvision", "fastai", "hydra", "platform", "cpu", "cpu_count", "cuda", "gpu", "git_commit")


class ReportError(ValueError):
    """Input the report cannot use; the message is one sentence naming the fix."""


@dataclass
class Run:
    """One point of a sweep: its record, and its per-epoch and per-layer tables when present."""

    source: str
    record: dict[str, Any]
    history: pd.DataFrame | None = None
    layers: pd.DataFrame | None = None

    @property
    def config(self) -> dict[str, Any]:
        return self.record.get("config") or {}

    @property
    def stem(self) -> str:
        return str(self.config.get("stem", {}).get("name"))

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    @property
    def status(self) -> str:
        return str(self.record.get("status", "unknown"))

    def metric(self, key: str) -> float:
        value = (self.record.get("metrics") or {}).get(key)
        try:
            return float(value)
        except (TypeError, ValueError):
            return math.nan


@dataclass
class Inputs:
    runs: list[Run]
    skipped: list[tuple[str, str]] = field(default_factory=list)      # (path, why)
    unfinished: list[str] = field(default_factory=list)               # job dirs without a record
    missing: list[tuple[str, str, Any]] = field(default_factory=list)  # (sweep dir, stem, seed) never run
    sweep_commands: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# reading


def read_records(root: Path) -> Inputs:
    """Every result.json under `root`; unreadable or newer-format records are named as skipped."""
    from experiments.record import RECORD_FORMAT

    if not root.is_dir():
        raise ReportError(f"{root} is not a directory; pass the sweep directory, e.g. multirun/stem_study_mnist5k.")
    inputs = Inputs(runs=[])
    for path in sorted(root.rglob(RECORD_NAME)):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            inputs.skipped.append((str(path), f"unreadable JSON ({type(e).__name__})"))
            continue
        fmt = record.get("format") if isinstance(record, dict) else None
        if not isinstance(record, dict) or not isinstance(record.get("config"), dict) or "stem" not in record["config"]:
            inputs.skipped.append((str(path), "not a stemlab result record (no config.stem)"))
            continue
        if isinstance(fmt, int) and fmt > RECORD_FORMAT:
            inputs.skipped.append((str(path), f"record format {fmt} is newer than this reader's {RECORD_FORMAT}; update stemlab"))
            continue
        # format 1, or an older record without a format number: the fields read here have not changed
        run = Run(str(path.parent), record)
        for name, attr in (("history.csv", "history"), ("layers.csv", "layers")):
            if (path.parent / name).exists():
                try:
                    setattr(run, attr, pd.read_csv(path.parent / name))
                except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
                    pass
        inputs.runs.append(run)
    recorded = {Path(r.source).resolve() for r in inputs.runs} | {Path(p).parent.resolve() for p, _ in inputs.skipped}
    for hydra_dir in sorted(root.rglob(".hydra")):
        job = hydra_dir.parent
        if (hydra_dir / "overrides.yaml").exists() and job.resolve() not in recorded and not (job / "multirun.yaml").exists():
            inputs.unfinished.append(str(job))
    for multirun in sorted(root.rglob("multirun.yaml")):
        expected, command = expected_points(multirun)
        if command:
            inputs.sweep_commands.append(command)
        here = {(r.stem, str(r.seed)) for r in inputs.runs if Path(r.source).resolve().is_relative_to(multirun.parent.resolve())}
        inputs.missing += [(str(multirun.parent), s, seed) for s, seed in expected if (s, seed) not in here]
    if not inputs.runs:
        why = f" ({len(inputs.skipped)} skipped: {inputs.skipped[0][1]})" if inputs.skipped else ""
        raise ReportError(f"no result records ({RECORD_NAME}) under {root}{why}; run a sweep first "
                          "(python train.py -m +experiment=stem_study_mnist5k) or pass its directory.")
    return inputs


def expected_points(multirun_yaml: Path) -> tuple[list[tuple[str, str]], str]:
    """The (stem, seed) points a sweep was asked for, from Hydra's multirun.yaml, and its command line."""
    from omegaconf import OmegaConf

    try:
        hydra_cfg = OmegaConf.to_container(OmegaConf.load(multirun_yaml).hydra, resolve=False)
    except Exception:
        return [], ""
    return sweep_points(hydra_cfg)


def sweep_points(hydra_cfg: dict[str, Any]) -> tuple[list[tuple[str, str]], str]:
    """(stem, seed) points and command line of a sweep, from its `hydra` config (sweeper params + overrides)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob

    task = list(hydra_cfg.get("overrides", {}).get("task") or [])
    hydra_overrides = [o for o in hydra_cfg.get("overrides", {}).get("hydra") or []
                       if o.startswith(("hydra/", "hydra.launcher", "hydra.sweep"))]
    command = shlex.join(["python", "train.py", "-m", *task, *hydra_overrides])
    params = hydra_cfg.get("sweeper", {}).get("params") or {}
    lines = [f"{k}={v}" for k, v in params.items()] + task  # the command line wins over the preset, as in Hydra
    try:
        parsed = OverridesParser.create().parse_overrides(lines)
    except Exception:
        return [], command
    values: dict[str, list[str]] = {}
    for o in parsed:
        if o.key_or_group not in ("stem", "seed"):
            continue
        if isinstance(o.value(), Glob):
            import stems

            values[o.key_or_group] = o.value().filter(stems.available()) if o.key_or_group == "stem" else []
        elif o.is_sweep_override():
            values[o.key_or_group] = list(o.sweep_string_iterator())
        else:
            values[o.key_or_group] = [o.get_value_element_as_str()]
    if not values.get("stem") or not values.get("seed"):
        return [], command
    return [(s, seed) for s in values["stem"] for seed in values["seed"]], command


def read_wandb(project: str, group: str | None) -> Inputs:
    """Runs of a W&B project (optionally one group) through wandb's public API, as records."""
    try:
        import wandb

        api = wandb.Api(timeout=20)
        runs = list(api.runs(project, filters={"group": group} if group else None))
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ReportError(f"cannot read W&B project {project!r} ({reason}); run `wandb login` on a machine with "
                          "network access, or report from the local records: python -m analyze report DIR.") from e
    inputs = Inputs(runs=[])
    for r in runs:
        config, summary = dict(r.config), dict(r.summary._json_dict)
        if "stem" not in config:
            inputs.skipped.append((r.url, "not a stemlab run (no stem in its config)"))
            continue
        status = {"finished": "completed", "crashed": "failed", "failed": "failed"}.get(r.state, r.state)
        if status == "completed" and not math.isfinite(float(summary.get("valid_acc", math.nan) or math.nan)):
            status = "diverged"
        record = {"config": config, "status": status, "metrics": summary, "name": r.name,
                  "environment": {k: (r.metadata or {}).get(k) for k in ("python",)} | {"platform": (r.metadata or {}).get("os")},
                  "hardware": {"device": "cuda" if (r.metadata or {}).get("gpu") else "cpu", "gpu": (r.metadata or {}).get("gpu")}}
        history = r.history(keys=["epoch", "accuracy", "train_loss", "valid_loss"], pandas=True)
        if len(history) and "epoch" in history:
            history["epoch"] -= 1  # W&B's epochs count from 1 (tracking.WandbEpochs), history.csv's from 0
        run = Run(r.url, record, history=history if len(history) else None)
        try:  # the per-layer table is a W&B Table file; runs logged without it simply have no depth figure
            ref = summary.get("layers") or {}
            if ref.get("path"):
                import tempfile

                with tempfile.TemporaryDirectory() as tmp:
                    table = json.loads(Path(r.file(ref["path"]).download(root=tmp, replace=True).name).read_text())
                run.layers = pd.DataFrame(table["data"], columns=table["columns"])
        except Exception:
            pass
        inputs.runs.append(run)
    if not inputs.runs:
        raise ReportError(f"no stemlab runs in W&B project {project!r}" + (f" group {group!r}" if group else "")
                          + "; check the project and group names (logger.project, logger.group).")
    return inputs


# ---------------------------------------------------------------------------------------------
# studies and statistics


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v) if isinstance(v, list) else v
    return out


@dataclass
class Study:
    """Records whose config differs only in the stem (and its parameters) and the seed."""

    label: str
    slug: str
    config: dict[str, Any]
    runs: list[Run]


def split_studies(runs: list[Run]) -> list[Study]:
    keyed: dict[str, list[Run]] = {}
    for run in runs:
        key = json.dumps({k: v for k, v in run.config.items() if k not in NOT_STUDY_KEYS}, sort_keys=True, default=str)
        keyed.setdefault(key, []).append(run)
    configs = {k: flatten(json.loads(k)) for k in keyed}
    studies = []
    for key, members in sorted(keyed.items(), key=lambda kv: -len(kv[1])):
        c = configs[key]
        base = f"{c.get('trunk.name')} · {c.get('data.name')}" + (f" @ {c['data.image_size']} px" if c.get("data.image_size") else "")
        others = [configs[k] for k in keyed if k != key and flatten(json.loads(k)).get("trunk.name") == c.get("trunk.name")
                  and configs[k].get("data.name") == c.get("data.name")]
        differing = sorted({f for o in others for f in set(c) | set(o) if c.get(f) != o.get(f)})
        label = base + (" · " + ", ".join(f"{f}={c.get(f)}" for f in differing[:4]) if differing else "")
        slug = "".join(ch if ch.isalnum() else "_" for ch in f"{c.get('trunk.name')}_{c.get('data.name')}")
        studies.append(Study(label, slug, json.loads(key), members))
    seen: Counter[str] = Counter()
    for s in studies:  # unique figure names when two studies share trunk and dataset
        seen[s.slug] += 1
        if seen[s.slug] > 1:
            s.slug += f"_{seen[s.slug]}"
    return studies


def stem_labels(runs: list[Run]) -> dict[int, str]:
    """Each run's stem label: its name, plus the stem parameters that differ between runs of that name."""
    by_name: dict[str, list[Run]] = {}
    for r in runs:
        by_name.setdefault(r.stem, []).append(r)
    labels = {}
    for name, rs in by_name.items():
        flat = [flatten({k: v for k, v in r.config.get("stem", {}).items() if k != "name"}) for r in rs]
        varying = sorted({k for f in flat for k in f if any(g.get(k) != f.get(k) for g in flat)})
        for r, f in zip(rs, flat):
            labels[id(r)] = name + (f" ({', '.join(f'{k}={f.get(k)}' for k in varying)})" if varying else "")
    return labels


def t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the two-sided Student-t confidence interval (NaN half-width for n < 2)."""
    from scipy import stats

    x = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return math.nan, math.nan
    if len(x) < 2:
        return float(x.mean()), math.nan
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean()), float(half)


def paired_p(best: dict[Any, float], other: dict[Any, float]) -> tuple[float, int]:
    """Two-sided paired t-test over the seeds both stems completed: (p, number of pairs)."""
    from scipy import stats

    seeds = sorted(s for s in set(best) & set(other) if math.isfinite(best[s]) and math.isfinite(other[s]))
    if len(seeds) < 2:
        return math.nan, len(seeds)
    a, b = np.array([best[s] for s in seeds]), np.array([other[s] for s in seeds])
    d = a - b
    if np.allclose(d, d[0]):  # no spread in the differences: the test is undefined, the answer is not
        return (1.0 if abs(d[0]) < 1e-12 else 0.0), len(seeds)
    return float(stats.ttest_rel(a, b).pvalue), len(seeds)


def step_ms(run: Run) -> tuple[float, str]:
    """Time per training step: the profiled end-to-end step when the run timed layers, else batch / img/s."""
    ms = run.metric("ms_train_step")
    if math.isfinite(ms):
        return ms, "profiled"
    img_s, bs = run.metric("train_img_s"), (run.config.get("train") or {}).get("bs")
    return (1000 * bs / img_s if bs and img_s > 0 else math.nan), "throughput"


def stem_table(study: Study) -> pd.DataFrame:
    """One row per stem: accuracy statistics over seeds and cost metrics; the best and the within-noise marked."""
    labels = stem_labels(study.runs)
    rows, acc_by_stem = [], {}
    for label in sorted(set(labels.values())):
        rs = [r for r in study.runs if labels[id(r)] == label]
        done = [r for r in rs if r.status == "completed" and math.isfinite(r.metric("valid_acc"))]
        accs = {r.seed: r.metric("valid_acc") for r in done}
        acc_by_stem[label] = accs
        mean, half = t_interval(list(accs.values()))
        steps = [step_ms(r) for r in done]

        def avg(key: str) -> float:
            vals = [r.metric(key) for r in done if math.isfinite(r.metric(key))]
            # timings: the median, since a busy machine slows some runs a lot and others not at all
            return (float(np.median(vals)) if key in TIMED else float(np.mean(vals))) if vals else math.nan

        rows.append({"stem": label, "acc_mean": mean, "acc_ci95": half, "n": len(done), "points": len(rs),
                     "not_completed": ", ".join(f"seed {r.seed}: {r.status}" for r in rs if r not in done),
                     "seeds": sorted(accs, key=str), "params": avg("params"),
                     "gflops_fwd": avg("flops_fwd_per_image") / 1e9, "gflops_train": avg("flops_train_per_image") / 1e9,
                     "stem_share_flops": avg("stem_share_flops"), "stem_share_time": avg("stem_share_time"),
                     "ms_step": float(np.median([s for s, _ in steps])) if steps else math.nan,
                     "ms_step_source": ",".join(sorted({src for _, src in steps})),
                     "img_s": avg("train_img_s"), "best_acc": avg("best_valid_acc")})
    table = pd.DataFrame(rows)
    table["verdict"], table["p_vs_best"] = "", math.nan
    ranked = table[table["n"] > 0].sort_values("acc_mean", ascending=False)
    if len(ranked):
        best = ranked.iloc[0]["stem"]
        for i, row in table.iterrows():
            if row["stem"] == best:
                table.at[i, "verdict"] = "**best**"
            elif row["n"] == 0:
                table.at[i, "verdict"] = "no completed seed"
            else:
                p, pairs = paired_p(acc_by_stem[best], acc_by_stem[row["stem"]])
                table.at[i, "p_vs_best"] = p
                table.at[i, "verdict"] = (f"untested ({pairs} shared seed{'s' * (pairs != 1)})" if math.isnan(p)
                                          else f"≈ best (p = {p:.2f})" if p >= ALPHA else f"worse (p = {p:.3f})")
    return table.sort_values(["acc_mean", "stem"], ascending=[False, True], na_position="last").reset_index(drop=True)


def pareto_front(cost: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats on both (lower cost, higher accuracy), by cost."""
    ok = [i for i in range(len(cost)) if math.isfinite(cost[i]) and math.isfinite(acc[i])]
    front = [i for i in ok if not any((cost[j] <= cost[i] and acc[j] >= acc[i]) and (cost[j] < cost[i] or acc[j] > acc[i])
                                      for j in ok)]
    return np.array(sorted(front, key=lambda i: cost[i]), dtype=int)


def depth_shares(runs: list[Run]) -> pd.DataFrame:
    """Per stage: share of a training step's FLOPs and of its time (mean over the runs that have layers.csv)."""
    frames = []
    for r in runs:
        layers = r.layers
        if layers is None or "group" not in layers or "flops_fwd" not in layers:
            continue
        g = layers.assign(flops=layers["flops_fwd"] + layers.get("flops_bwd", 0),
                          ms=layers.get("ms_fwd", np.nan) + layers.get("ms_bwd", 0)).groupby("group")[["flops", "ms"]].sum(min_count=1)
        g = g.reindex([s for s in STAGES if s in g.index] + [s for s in g.index if s not in STAGES])
        total_ms = g["ms"].sum(min_count=1)
        frames.append(pd.DataFrame({"share_flops": g["flops"] / g["flops"].sum(),
                                    "share_time": g["ms"] / total_ms if total_ms and math.isfinite(total_ms) else np.nan}))
    if not frames:
        return pd.DataFrame(columns=["share_flops", "share_time"])
    cat = pd.concat(frames)
    return cat.groupby(level=0, sort=False).mean()


# ---------------------------------------------------------------------------------------------
# markdown


def _num(v: float, digits: int = 1, unit: float = 1.0) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v / unit:,.{digits}f}"


def _pct(v: float) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{100 * v:.1f} %"


def markdown_table(table: pd.DataFrame) -> str:
    head = ["stem", "accuracy (mean ± 95 % CI)", "seeds", "vs best", "params (M)", "GFLOPs fwd", "GFLOPs train",
            "stem % FLOPs", "stem % time", "ms / train step", "img/s"]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|---|" + "---:|" * (len(head) - 4)]
    for _, r in table.iterrows():
        acc = ("–" if not math.isfinite(r["acc_mean"]) else f"{100 * r['acc_mean']:.2f} %"
               + ("" if not math.isfinite(r["acc_ci95"]) else f" ± {100 * r['acc_ci95']:.2f}"))
        seeds = f"{r['n']}" + (f" of {r['points']}" if r["points"] != r["n"] else "")
        ms = _num(r["ms_step"], 1) + (" †" if r["ms_step_source"] == "throughput" else "")
        name = f"**`{r['stem']}`**" if r["verdict"] == "**best**" else f"`{r['stem']}`"
        lines.append("| " + " | ".join([name, acc, seeds, r["verdict"], _num(r["params"], 2, 1e6), _num(r["gflops_fwd"], 3),
                                         _num(r["gflops_train"], 3), _pct(r["stem_share_flops"]), _pct(r["stem_share_time"]),
                                         ms, _num(r["img_s"], 0)]) + " |")
    return "\n".join(lines)


def depth_table(study: Study, order: list[str]) -> str:
    labels = stem_labels(study.runs)
    head = ["stem", *STAGES]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * len(STAGES)]
    for stem in order:
        shares = depth_shares([r for r in study.runs if labels[id(r)] == stem and r.status == "completed"])
        cells = []
        for s in STAGES:
            if s not in shares.index:
                cells.append("–")
                continue
            f, t = shares.at[s, "share_flops"], shares.at[s, "share_time"]
            cells.append(f"{100 * f:.1f} → {100 * t:.1f}" if math.isfinite(t) else f"{100 * f:.1f} → –")
        lines.append(f"| `{stem}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def distinct(values: list[Any]) -> str:
    counts = Counter(str(v) for v in values if v is not None)
    if not counts:
        return "–"
    return next(iter(counts)) if len(counts) == 1 else "; ".join(f"{v} ({n} run{'s' * (n != 1)})" for v, n in counts.most_common())


def provenance(study: Study) -> list[str]:
    envs = [r.record.get("environment") or {} for r in study.runs]
    hws = [r.record.get("hardware") or {} for r in study.runs]
    lines = [f"- hardware: device {distinct([h.get('device') for h in hws])}, precision {distinct([h.get('precision') for h in hws])}, "
             f"channels_last {distinct([h.get('channels_last') for h in hws])}; GPU {distinct([e.get('gpu') for e in envs])}; "
             f"CPU {distinct([e.get('cpu') for e in envs])} × {distinct([e.get('cpu_count') for e in envs])} logical cores; "
             f"{distinct([e.get('platform') for e in envs])}",
             "- software: " + ", ".join(f"{k} {distinct([e.get(k) for e in envs])}" for k in
                                         ("python", "torch", "torchvision", "fastai", "hydra", "cuda") if any(e.get(k) for e in envs)),
             f"- code: git commit {distinct([e.get('git_commit') for e in envs])}"]
    walls = [float(r.record["wall_s"]) for r in study.runs if isinstance(r.record.get("wall_s"), (int, float))]
    starts = sorted(str(r.record["started"]) for r in study.runs if r.record.get("started"))
    ends = sorted(str(r.record["finished"]) for r in study.runs if r.record.get("finished"))
    if walls:
        lines.append(f"- wall time: {sum(walls) / 60:.1f} min summed over {len(walls)} runs (median {np.median(walls):.0f} s per run)"
                     + (f"; first start {starts[0][:19]} UTC, last finish {ends[-1][:19]} UTC" if starts and ends else ""))
    return lines


def render(inputs: Inputs, studies: list[Study], tables: list[pd.DataFrame], figures: list[dict[str, str]],
           command: str) -> str:
    from omegaconf import OmegaConf

    sweeps = sorted(set(inputs.sweep_commands))
    out = ["# Stem study report", "",
           f"Generated by `{command}` from {len(inputs.runs)} result records"
           + (f" ({len(inputs.skipped)} skipped)" if inputs.skipped else "") + "."]
    if len(sweeps) == 1:  # the sweep skips completed points, so this re-reads the records unless some are missing
        out.append(f"Sweep and report in one command: `{sweeps[0]} && {command}`.")
    else:
        out += [f"Sweep command (from Hydra's multirun.yaml): `{c}`." for c in sweeps]
    out += ["", f"Accuracy is the validation accuracy after the last epoch; ± is the half-width of the 95 % confidence "
            f"interval of the mean over seeds (Student's t, n − 1 degrees of freedom). **best**: highest mean. "
            f"\"≈ best\": a two-sided paired t-test over the seeds both stems ran (`scipy.stats.ttest_rel`) finds no "
            f"difference at α = {ALPHA}; \"worse\": it does. FLOPs are per image, counted by torch's FlopCounterMode "
            "(train = forward + backward). Stem % time is the stem's share of the layer-timed forward pass "
            "(– where layers were not timed). ms / train step is the profiled end-to-end step; † marks batch size / "
            "training img/s instead (measured during training, data loading included). Times, time shares and img/s "
            "are medians over seeds (one busy moment on a shared machine slows one run, not the stem); the other "
            "columns are means."]
    for study, table, figs in zip(studies, tables, figures):
        out += ["", f"## {study.label}", "", markdown_table(table), ""]
        notes = [f"`{r['stem']}`: {r['not_completed']}" for _, r in table.iterrows() if r["not_completed"]]
        if notes:
            out.append("Not completed (excluded from the statistics): " + "; ".join(notes) + ".")
            out.append("")
        for key, caption in (("pareto", "Accuracy (mean ± 95 % CI) against the time of a training step (median over seeds) and "
                                          "against forward FLOPs; the line joins the Pareto front (no other stem is both cheaper and more accurate)."),
                             ("depth", "Compute by depth: each stage's share of a training step's FLOPs against its share of "
                                       "the measured time (forward + backward, mean over seeds)."),
                             ("curves", "Training curves: mean over seeds, band from the lowest to the highest seed.")):
            if key in figs:
                out += [f"![{key}]({figs[key]})", "", caption, ""]
            elif key == "curves":
                epochs = max((r.history["epoch"].nunique() for r in study.runs
                              if r.history is not None and "epoch" in r.history), default=0)
                out += ["No training curves: " + ("these runs have one epoch each (the table holds its values)."
                                                  if epochs == 1 else "these records have no per-epoch history."), ""]
        out += ["Compute by depth, share of FLOPs → share of time per stage (%, training step):", "",
                depth_table(study, list(table["stem"])), "", "### Provenance", "", *provenance(study), "",
                "Config shared by every run of this study (stem and seed vary):", "", "```yaml",
                OmegaConf.to_yaml(OmegaConf.create(study.config)).rstrip(), "```"]
    if inputs.missing or inputs.unfinished or inputs.skipped:
        out += ["", "## Missing, unfinished and skipped points", ""]
        out += [f"- missing (asked for by the sweep, no record): stem `{s}`, seed {seed} in {d}" for d, s, seed in inputs.missing]
        out += [f"- unfinished (started, no record: killed or still running): {d}" for d in inputs.unfinished]
        out += [f"- skipped: {p}: {why}" for p, why in inputs.skipped]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# command


def add_report_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="compare the stems of a sweep: report.md with figures",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("dir", help="the sweep directory (its result records are read recursively); with --wandb, where to write")
    p.add_argument("--out", default=None, help="where report.md and the figures go (default: DIR)")
    p.add_argument("--wandb", metavar="PROJECT", default=None, help="read the runs of this W&B project (entity/project) instead")
    p.add_argument("--group", default=None, help="with --wandb: only this W&B group (a sweep)")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from analyze.report_figures import write_figures

    root = Path(args.dir)
    inputs = read_wandb(args.wandb, args.group) if args.wandb else read_records(root)
    out = Path(args.out) if args.out else root
    out.mkdir(parents=True, exist_ok=True)
    studies = split_studies(inputs.runs)
    tables = [stem_table(s) for s in studies]
    figures = [write_figures(s, t, out) for s, t in zip(studies, tables)]
    command = shlex.join(["python", "-m", "analyze", "report", *sys.argv[2:]]) if sys.argv[1:2] == ["report"] else \
        shlex.join(["python", "-m", "analyze", "report", args.dir, *(["--out", args.out] if args.out else [])])
    text = render(inputs, studies, tables, figures, command)
    tmp = out / ".report.md.tmp"
    tmp.write_text(text)
    tmp.replace(out / "report.md")
    for study, table in zip(studies, tables):
        print(f"\n{study.label}\n\n{markdown_table(table)}")
    if inputs.missing or inputs.unfinished or inputs.skipped:
        print(f"\n{len(inputs.missing)} missing, {len(inputs.unfinished)} unfinished, {len(inputs.skipped)} skipped points (listed in the report).")
    print(f"\nwrote {out / 'report.md'} and {sum(len(f) for f in figures)} figures")
    return 0
