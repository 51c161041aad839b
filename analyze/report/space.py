"""``python -m analyze space DIR [--out DIR] [--export N]``: what a design-space study says about stem design.

Reads the runs of a `hydra/sweeper=space` sweep (every result record under DIR whose stem is a point of the space),
and writes ``space.md`` with PNG figures beside it, following RegNet (Radosavovic et al. 2020, §2-3):
the error EDF of all sampled stems, with its 95 % Dvoretzky-Kiefer-Wolfowitz band; the EDFs split by each design
choice (depth, how the two x2 downsamplings are done, first conv's stride, largest kernel, patch embedding,
widest inner layer, norm, activation) with a table per choice; error against measured train-step time and
against FLOPs with the Pareto front; and ``stems.yaml``: the best sampled stems as named points, which run by
name once copied into stems/points/ (``python train.py stem=<name>``).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import yaml
from matplotlib.lines import Line2D

from experiments.schema import STEM_KEYS
from profiler.figure_files import label_points
from stems import spec
from stems.base import atomic_write, output_folder
from stems.space_labels import code, design

from .data import ReportError, Run, read_records
from .studies import split_studies
from .figures import load_note, log_axis_if_spread, new_figure, save
from .render import md_table
from .scope import scope_lines
from .statistics import completed, pareto_front, step_ms, t_interval

ALPHA = 0.05  # the EDF band's and the CIs' level


# --- numbers ------------------------------------------------------------------------------------------------------

def edf(values) -> tuple[np.ndarray, np.ndarray]:
    """The empirical distribution function as steps: sorted values x and F(x) = share of values ≤ x."""
    x = np.sort(np.asarray(values, dtype=float))
    return x, np.arange(1, len(x) + 1) / len(x)


def dkw(n: int, alpha: float = ALPHA) -> float:
    """Half-width of the (1 - alpha) confidence band around an EDF of n samples (Dvoretzky-Kiefer-Wolfowitz, with
    Massart's constant): the true distribution lies within ±this of the EDF everywhere, with probability 1 - alpha."""
    return math.sqrt(math.log(2 / alpha) / (2 * n)) if n else math.nan


def space_table(runs: list[Run]) -> pd.DataFrame:
    """One row per completed run of a space point: its code, error (%), cost and design choices."""
    rows = []
    for r in completed(runs):
        params = {k: v for k, v in (r.config.get("stem") or {}).items() if k not in STEM_KEYS}
        try:
            choices = design(params)
        except (KeyError, TypeError, ValueError):  # not a point of the space (another stem in the same directory)
            continue
        rows.append({"run": r.source, "code": code(params), "seed": r.seed, "error": 100 * (1 - r.metric("valid_acc")),
                     "ms_step": step_ms(r), "gflops": r.metric("flops_fwd_per_image") / 1e9, "params": params,
                     **choices})
    return pd.DataFrame(rows)


def choice_table(table: pd.DataFrame, choice: str) -> pd.DataFrame:
    """Per value of one design choice: how many stems, their mean error with its 95 % t-CI, median and best."""
    rows = []
    for value, g in table.groupby(choice, sort=True):
        mean, half = t_interval(g["error"])
        rows.append({"value": value, "n": len(g), "mean": mean, "ci": half, "median": g["error"].median(),
                     "best": g["error"].min()})
    return pd.DataFrame(rows)


CHOICES = list(design(spec("space").defaults))  # the labels design() gives, in its order


# --- figures -----------------------------------------------------------------------------------------------------

def plot_edf(table: pd.DataFrame):
    fig, axes = new_figure(1, 1, (5.5, 3.6))
    ax = axes[0, 0]
    x, f = edf(table["error"])
    eps = dkw(len(x))
    ax.step(x, f, where="post", color="black", label=f"all {len(x)} stems")
    ax.fill_between(x, np.clip(f - eps, 0, 1), np.clip(f + eps, 0, 1), step="post", color="grey", alpha=0.25,
                    label=f"95 % DKW band (±{eps:.2f} of the share of stems)")
    ax.set(xlabel="validation error (%)", ylabel="share of stems with error ≤ x", ylim=(0, 1.02))
    ax.legend(loc="lower right", fontsize=8)
    return fig


MAX_BANDS = 3  # more EDFs with bands per panel hide each other: the rest of a choice's values are in its table


def plot_edf_by_choice(table: pd.DataFrame):
    """One panel per design choice: the error EDFs, each with its 95 % DKW band (its own n, so its own width), of
    the MAX_BANDS values most stems made; every value is in the choice's table. Legends sit under the panels."""
    cols = 4
    rows = math.ceil(len(CHOICES) / cols)
    fig, axes = new_figure(rows, cols, (3.3 * cols, 3.4 * rows), sharey=True)
    colors = matplotlib.colormaps["tab10"]
    left_out = 0
    for ax, choice in zip(axes.flat, CHOICES):
        groups = list(table.groupby(choice, sort=True))
        shown = {value for value, _ in sorted(groups, key=lambda vg: -len(vg[1]))[:MAX_BANDS]}
        left_out += len(groups) - len(shown)
        for i, (value, g) in enumerate(vg for vg in groups if vg[0] in shown):
            x, f = edf(g["error"])
            x, f, eps = np.r_[x[0], x], np.r_[0, f], dkw(len(g))
            ax.step(x, f, where="post", color=colors(i), label=f"{value} (n={len(g)}, ±{eps:.2f})")
            ax.fill_between(x, np.clip(f - eps, 0, 1), np.clip(f + eps, 0, 1), step="post", color=colors(i), alpha=0.12)
        others = len(groups) - len(shown)
        ax.set_title(choice + (f" ({others} value(s) with fewer stems: table)" if others else ""), fontsize=8)
        ax.set_xlabel("validation error (%)", fontsize=8)
        ax.set_ylim(0, 1.02)
        hidden = limit_to_bulk(ax.set_xlim, table["error"].to_numpy(float))
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=1, frameon=False)
    for ax in axes[:, 0]:
        ax.set_ylabel("share of stems\nwith error ≤ x", fontsize=8)
    for ax in axes.flat[len(CHOICES):]:
        ax.set_visible(False)
    fig.suptitle(f"error EDF by design choice, the {MAX_BANDS} values most stems made per choice; bands: 95 % DKW "
                 "(± a share of stems, wider for fewer stems)"
                 + (f"; {hidden} far outlier(s), above Q3 + 3 IQR, out of view" if hidden else ""), fontsize=10)
    return fig


def far_out(values: np.ndarray) -> np.ndarray:
    """Tukey's far outliers: above Q3 + 3 IQR (a mask). They stay in every table; a figure's axis stops before
    them so that one slow or failed stem does not squeeze the rest into a corner."""
    finite = values[np.isfinite(values)]
    if len(finite) < 4:
        return np.zeros(len(values), dtype=bool)
    q1, q3 = np.percentile(finite, [25, 75])
    return np.isfinite(values) & (values > q3 + 3 * (q3 - q1))


def limit_to_bulk(set_lim, values: np.ndarray) -> int:
    """Stops an axis just past the stems that are not far outliers; how many it leaves out of view."""
    out = far_out(values)
    if out.any():
        bulk = values[np.isfinite(values) & ~out]
        set_lim(bulk.min() - 0.05 * np.ptp(bulk), bulk.max() + 0.08 * np.ptp(bulk))
    return int(out.sum())


def plot_cost(table: pd.DataFrame, timed_at: str = "load while timed not recorded"):
    """Error against cost, every stem in view (a log cost axis when costs spread over 5x); far outliers in error
    (above Q3 + 3 IQR, e.g. a diverged stem) are left out of view and counted. The Pareto front is numbered by
    cost and its stems named in a key under the panel; `timed_at` (load_note) says how busy the machine was."""
    fig, axes = new_figure(1, 2, (11, 5.6))
    err = table["error"].to_numpy(float)
    hidden = 0
    for ax, (key, label) in zip(axes[0], [("ms_step", "measured train step (ms, whole model)"),
                                           ("gflops", "forward GFLOPs per image (whole model)")]):
        cost = table[key].to_numpy(float)
        ax.scatter(cost, err, s=18, color="tab:blue", alpha=0.7, label="a sampled stem")
        front = pareto_front(cost, -err)
        ax.plot(cost[front], err[front], color="tab:red", marker="o", ms=4, label="Pareto front")
        log_axis_if_spread(ax, cost)
        hidden = limit_to_bulk(ax.set_ylim, err)
        numbers = [str(k + 1) for k in range(len(front))]
        label_points(ax, cost[front], err[front], numbers, ["tab:red"] * len(front))
        ax.set(xlabel=label, ylabel="validation error (%)")
        ax.grid(alpha=0.3)
        keys = [Line2D([], [], ls="none", label=f"{n}: {table['code'].iloc[i]} ({err[i]:.2f} %)")
                for n, i in zip(numbers, front)]
        ax.legend(handles=ax.get_legend_handles_labels()[0] + keys, fontsize=6.5, loc="upper center",
                  bbox_to_anchor=(0.5, -0.14), frameon=False, handlelength=1)
    fig.suptitle("error vs cost: every sampled stem; the Pareto front numbered by cost, its stems in the key"
                 + (f" ({hidden} stem(s) above Q3 + 3 IQR in error out of view)" if hidden else "")
                 + f"\nstep times {timed_at}", fontsize=10)
    return fig


# --- the report --------------------------------------------------------------------------------------------------

def export_points(table: pd.DataFrame, n: int, study: str) -> tuple[str, list[str]]:
    """stems.yaml (the best n stems as named points) and their names."""
    best = table.sort_values("error").head(n)
    stem = re.sub(r"[^A-Za-z0-9_]+", "_", study).strip("_") or "space"  # a stem name is letters, digits and _
    names = [f"{stem}_{i + 1}" for i in range(len(best))]
    entries = {name: {"source": f"sampled in the design-space study {study} ({r.code}): {r.error:.2f} % error, "
                                f"rank {i + 1} of {len(table)}", "params": r.params}
               for i, (name, r) in enumerate(zip(names, best.itertuples()))}
    header = ("# The best stems of a design-space study as named points of stems.space (python -m analyze space).\n"
              "# Copy this file into stems/points/ to run them by name: python train.py stem=<name>\n")
    return header + yaml.safe_dump(entries, sort_keys=False, default_flow_style=None), names


def space_scope(runs: list[Run], n: int) -> list[str]:
    """Each study's Scope paragraph (scope.py); what it could detect: no difference between two stems (one seed
    each), and over the space, EDFs apart by more than their DKW band."""
    detect = (f"none between two stems (each trained once: no seed spread to test a difference); over the space, error "
              f"EDFs closer than ±{dkw(n):.2f} of the share of stems (the 95 % DKW band) are not told apart")
    return [line for study in split_studies(runs) for line in scope_lines(study, detect)]


def render(table: pd.DataFrame, plan: dict[str, Any] | None, figures: dict[str, str], names: list[str],
           command: str, skipped: int, scope: list[str] = ()) -> str:
    n = len(table)
    errors = table["error"]
    eps = dkw(n)
    lines = ["# Stem design space", "", f"Regenerate: `{command}`", ""]
    if plan:
        band = f", inside the cost band {plan['band']}" if plan.get("band") else ""
        lines += [f"{plan['samples']} stems drawn from stems.space with sample_seed {plan['sample_seed']}{band}, at "
                  f"{plan['image_size']} px and {plan['in_channels']} input channel(s); choices: "
                  + ", ".join(f"{k} {v}" for k, v in plan["choices"].items()) + ".", ""]
    lines += [f"**{n} completed runs** of {table['code'].nunique()} distinct stems" +
              (f" ({skipped} runs not completed are left out)" if skipped else "") + ". "
              f"Error: median {errors.median():.2f} %, best {errors.min():.2f} %, worst {errors.max():.2f} %. "
              f"With {n} samples the EDF is known to within ±{eps:.2f} of the share of stems (95 % DKW band, the same "
              "everywhere): "
              "split by a design choice, each curve rests on fewer stems and its band widens (e.g. "
              f"±{dkw(max(1, n // 3)):.2f} for a choice a third of the stems made); curves closer than their "
              "bands are not told apart.", "", *scope]
    if "edf" in figures:
        lines += [f"![error EDF]({figures['edf']})", ""]
    lines += ["## Error by design choice", "",
              "Mean error with its 95 % t-CI over the stems that made each choice (each stem trained once, so the "
              "spread mixes the other choices and seed noise), median and best.", ""]
    if "by_choice" in figures:
        lines += [f"![EDF by design choice]({figures['by_choice']})", ""]
    for choice in CHOICES:
        ct = choice_table(table, choice)
        rows = [[str(r.value), str(r.n), f"{r.mean:.2f} ± {r.ci:.2f}" if math.isfinite(r.ci) else f"{r.mean:.2f}",
                 f"{r.median:.2f}", f"{r.best:.2f}"] for r in ct.itertuples()]
        lines += [f"**{choice}**", "", md_table(["value", "stems", "mean error %", "median", "best"], "lrrrr", rows), ""]
    lines += ["## Error against cost", "",
              "Every sampled stem in the same trunk; the red line joins the stems no other beats on both cost and error.",
              ""]
    if "cost" in figures:
        lines += [f"![error vs cost]({figures['cost']})", ""]
    best = table.sort_values("error").head(10)
    lines += ["## Best sampled stems", "", md_table(["stem", "error %", "ms/step", "GFLOPs"], "lrrr", [
        [f"`{r.code}`", f"{r.error:.2f}", f"{r.ms_step:.0f}", f"{r.gflops:.3f}"] for r in best.itertuples()]), ""]
    if names:
        lines += [f"`stems.yaml` names the best {len(names)} ({', '.join(f'`{x}`' for x in names)}); copy it into "
                  "`stems/points/` and run one with `python train.py stem=<name>`. One seed each: re-run the finalists "
                  "over seeds (`python train.py -m stem=<names> seed=0,1,2`) before calling one better.", ""]
    return "\n".join(lines)


def run_space(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    inputs = read_records(root)
    table = space_table(inputs.runs)
    if table.empty:
        raise ReportError(f"no completed run of a stems.space point under {root}; run a design-space sweep first "
                          "(python train.py -m +experiment=stem_space_mnist5k) or pass its directory.")
    out = output_folder(Path(args.out)) if args.out else root
    plan_file = next(iter(sorted(root.rglob("space.json"))), None)
    plan = json.loads(plan_file.read_text()) if plan_file else None
    figures = {key: save(fig, out / f"space_{key}.png") for key, fig in
               (("edf", plot_edf(table)), ("by_choice", plot_edf_by_choice(table)), ("cost", plot_cost(table, load_note(inputs.runs))))}
    names: list[str] = []
    if args.export > 0:
        text, names = export_points(table, args.export, root.resolve().name)
        atomic_write(out / "stems.yaml", text)
    command = shlex.join(["python", "-m", "analyze", "space", *sys.argv[2:]]) if sys.argv[1:2] == ["space"] else \
        shlex.join(["python", "-m", "analyze", "space", args.dir, *(["--out", args.out] if args.out else [])])
    skipped = len(inputs.runs) - len(completed(inputs.runs))
    atomic_write(out / "space.md", render(table, plan, figures, names, command, skipped, space_scope(inputs.runs, len(table))))
    print(f"{len(table)} stems: median error {table['error'].median():.2f} %, best {table['error'].min():.2f} % "
          f"({table.sort_values('error')['code'].iloc[0]}); wrote {out / 'space.md'}, {len(figures)} figures"
          + (" and stems.yaml" if names else ""))
    return 0
