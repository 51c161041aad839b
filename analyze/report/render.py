"""The report as markdown: per study the stem table, figures with captions, compute by depth, the LR tuning
stage of a tuned study, provenance and the shared config; then the missing, unfinished and skipped points."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from experiments.lr_choice import RULE
from experiments.seed_plan import SeedPlan, saved_plan

from .checks import warnings_section
from .pairing import pairing_line, split_line
from .data import Inputs, seeds_command
from .comparison import EPOCH_SLACK, MIN_PAIRED_SEEDS, POSTERIOR_DRAWS, POWER, Power, power
from .scope import detect_text, distinct, scope_lines, wall_minutes
from .stage_costs import stage_cost_lines
from .statistics import STAGES, completed, depth_shares, reference_of
from .studies import Study, stem_labels
from .tuning import lr_choices
from .universality import CONCLUSIVE, verdict_kind
from .utilisation import WITHHELD, utilisation

METHOD = (
    "Accuracy is the validation accuracy after the last epoch; ± is the half-width of the 95 % confidence interval of "
    "the mean over seeds (Student's t, n − 1 degrees of freedom). Every stem is compared with the study's **reference** "
    "stem, named before the study ran (`compare.reference`; without one, resnet_7x7 when the study has it, else the "
    "first stem by name), over the seeds both completed: Δ is the mean paired difference (stem − reference, accuracy "
    "points) and p a two-sided paired t-test. With m stems tested against the reference, the correction is Bonferroni's: "
    "adjusted p = min(1, m × raw p), and the interval next to Δ is the t-interval at level 1 − 0.05/m (n − 1 degrees of "
    "freedom), so all m intervals hold together at 95 %: **better** (the interval lies above 0), **worse** (below 0), "
    "**equivalent** (inside ±margin, `compare.margin`, 1 point by default: both one-sided tests of statsmodels' "
    "ttost_paired reject at 0.05/m, i.e. the narrower 1 − 0.1/m interval lies inside ±margin; p equiv. is min(1, m × "
    f"raw TOST p)), else **inconclusive** (the data cannot tell). No test from fewer than {MIN_PAIRED_SEEDS} paired "
    "seeds (\"too few seeds\"), from differences that are all zero (\"identical\") or all the same (no spread to "
    "test). P(best): the posterior probability that the stem has the highest mean accuracy, each stem's mean "
    "difference to the reference drawn from its Student-t posterior (mean + SD/√n × t with n − 1 degrees of freedom, "
    f"independently per stem, {POSTERIOR_DRAWS:,} draws from a fixed generator; with few seeds its heavy tails keep "
    "P(best) from crowning a noise winner), the reference at 0, ties split evenly; it is not adjusted for the m "
    "comparisons (a stem's probability of beating the reference is 1 − its raw one-sided p). At ref. time: the stem's "
    "mean validation accuracy after the epochs it trains in the reference's training time (the reference's epochs × "
    "its step time / the stem's, median training step times), interpolated between epoch ends from the per-epoch "
    "history (– before a first epoch would end; \"not reached\" where a faster stem would need more epochs than it "
    "trained: nothing is extrapolated). FLOPs are per "
    "image, counted by torch's FlopCounterMode (train = forward + backward). Stem % time is the stem's share of the "
    "layer-timed forward pass (– where layers were not timed): the profile's few timed steps give such shares only, "
    "never a speed. ms / step and img/s are measured by the training itself over its last epoch, batch loading "
    "included (records without ms / step: batch size / training img/s); ‡ marks a stem with runs timed on a loaded "
    "machine (more runnable processes than cores), whose times are inflated. Times, time shares "
    "and img/s are medians over seeds (one busy moment on a shared machine slows one run, not the stem); the other "
    "columns are means. MFU (model FLOPs utilisation, a median too) is the training FLOPs per image times the training "
    "img/s over the peak FLOP/s measured on the run's device at its precision and thread count (– in older records; "
    "§: withheld where that peak cannot be trusted, as the note under the table says). The main table "
    "gives each stem's answer; the details table under it the p-values, accuracy at the reference's time and the "
    "costs. Each study opens with its **Scope**, read from its records: the budget it trained under, what every run "
    "shared and what varied (a setting that differs between its runs is named there), the smallest difference it "
    "could detect, and what its answers therefore cannot show.")

CAPTIONS = {
    "pareto": "Accuracy (mean over seeds) against the time of a training step measured by the training itself (median "
              "over seeds; the axis names the batch size and device) and against forward FLOPs; both bars span the "
              "lowest to the highest seed; a hollow marker is a stem with runs timed on a loaded machine. The line "
              "joins the Pareto front (no other stem is both cheaper and more accurate).",
    "depth": "Compute by depth: each stage's share of a training step's FLOPs and of its measured time (forward + "
             "backward); bars are the mean over seeds, whiskers the lowest and highest seed.",
    "curves": "Training curves: mean over seeds, band from the lowest to the highest seed.",
    "tuning": "LR tuning: accuracy on the tuning split (carved from the training set) against the learning rate, mean "
              "over seeds with its 95 % CI; the ringed point is the LR the tuning rule chooses.",
}


def _num(v: float, digits: int = 1, unit: float = 1.0) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v / unit:,.{digits}f}"


def _pct(v: float) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{100 * v:.1f} %"


def _lr(values: list[float]) -> str:
    return ", ".join(f"{v:g}" for v in values if math.isfinite(v)) or "–"


def md_table(head: list[str], align: str, rows: list[list[str]]) -> str:
    """A markdown table; `align` has one letter per column: l(eft) or r(ight)."""
    lines = ["| " + " | ".join(head) + " |", "|" + "".join("---|" if a == "l" else "---:|" for a in align)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _p(v: float) -> str:
    """4 decimals, or 3 significant digits below 0.001: enough to redo m × raw p by hand."""
    return "–" if not math.isfinite(v) else (f"{v:.2e}" if 0 < v < 1e-3 else f"{v:.4f}")


def comparison_cells(r: pd.Series) -> list[str]:
    """Δ vs the reference with its Bonferroni interval, p (adjusted; raw), p equiv. (adjusted; raw), verdict."""
    if r["verdict"] in ("**reference**", "no completed seed"):
        return ["", "", "", r["verdict"]]
    diff = _num(100 * r["diff"], 2) + ("" if not math.isfinite(r["diff_lo"]) else
                                       f" [{100 * r['diff_lo']:.2f}, {100 * r['diff_hi']:.2f}]")
    return [diff, f"{_p(r['p_adj'])} ({_p(r['p'])})" if math.isfinite(r["p"]) else "–",
            f"{_p(r['p_tost_adj'])} ({_p(r['p_tost'])})" if math.isfinite(r["p_tost"]) else "–", r["verdict"]]


def _at_ref_time(r: pd.Series) -> str:
    fit = r["epochs_at_ref_time"]
    if not math.isfinite(fit):
        return "–"
    if fit > r["epochs_trained"] + EPOCH_SLACK:  # a faster stem: its epochs end before the reference's time does
        return f"not reached ({fit:.2f} ep. fit, {r['epochs_trained']} trained)"
    acc = "–" if not math.isfinite(r["acc_at_ref_time"]) else f"{100 * r['acc_at_ref_time']:.2f} %"
    return f"{acc} ({fit:.2f} ep.)"


LOADED = " ‡"  # beside a time taken while the machine had more runnable processes than cores


def _timed(value: str, r: pd.Series) -> str:
    return value + (LOADED if r["loaded"] and value != "–" else "")


def _name(r: pd.Series) -> str:
    return f"**`{r['stem']}`**" if r["verdict"] == "**reference**" else f"`{r['stem']}`"


def markdown_table(table: pd.DataFrame) -> str:
    """The main stem table: accuracy, the comparison with the reference, P(best), the training's ms per step and
    the FLOPs; the rest is in details_table."""
    head = ["stem", "accuracy (mean ± 95 % CI)", "seeds", "Δ vs reference (pp, adjusted CI)", "verdict", "P(best)",
            "ms / step (training)", "GFLOPs fwd"]
    rows = []
    for _, r in table.iterrows():
        acc = ("–" if not math.isfinite(r["acc_mean"]) else f"{100 * r['acc_mean']:.2f} %"
               + ("" if not math.isfinite(r["acc_ci95"]) else f" ± {100 * r['acc_ci95']:.2f}"))
        seeds = f"{r['n']}" + (f" of {r['points']}" if r["points"] != r["n"] else "")
        diff, _, _, verdict = comparison_cells(r)
        rows.append([_name(r), acc, seeds, diff, verdict, _pct(r["p_best"]), _timed(_num(r["ms_step"], 1), r),
                     _num(r["gflops_fwd"], 3)])
    return md_table(head, "lrrrlrrr", rows)


def details_table(table: pd.DataFrame, show_lr: bool = False) -> str:
    """Everything else per stem: the LR where stems trained at different LRs (a tuned study), the tests' p-values,
    accuracy within the reference's time, and the costs."""
    tuned = show_lr or len({tuple(lrs) for lrs in table["lr"]}) > 1
    head = ["stem", *(["lr"] if tuned else []), "p (adjusted; raw)", "p equiv. (adjusted; raw)", "at ref. time",
            "params (M)", "GFLOPs train", "stem % FLOPs", "stem % time", "img/s (training)", "MFU"]
    rows = []
    for _, r in table.iterrows():
        _, p, p_equiv, _ = comparison_cells(r)
        rows.append([_name(r), *([_lr(r["lr"])] if tuned else []), p, p_equiv, _at_ref_time(r),
                     _num(r["params"], 2, 1e6), _num(r["gflops_train"], 3), _pct(r["stem_share_flops"]),
                     _pct(r["stem_share_time"]), _timed(_num(r["img_s"], 0), r),
                     _pct(r["mfu"]) + (WITHHELD if r["mfu_withheld"] else "")])
    return md_table(head, "l" + "r" * (len(head) - 1), rows)


def loaded_note(table: pd.DataFrame) -> list[str]:
    """The footnote of ‡, when some stem's times were taken on a loaded machine."""
    marked = [f"`{r['stem']}` ({r['loaded']} of {r['n']})" for _, r in table.iterrows() if r["loaded"]]
    if not marked:
        return []
    return [f"{LOADED.strip()} timed on a loaded machine (more runnable processes than cores) in some runs: "
            + ", ".join(marked) + "; those times are slower than the stem's own; re-run on a quiet machine to compare "
            "speeds.", ""]


def power_line(pw: Power | None) -> str:
    """What the study could detect (its `power`): the smallest Δ at 80 % power, and the seeds 1 point would need."""
    if pw is None:
        return "Power: no stem was tested against the reference, so the study's power is unknown."
    need = f"{pw.seeds_for_1pt} paired seeds" if pw.seeds_for_1pt else "– (no spread)"
    return (f"Power: from the paired spread of this study (SD of stem − reference {100 * pw.sd:.2f} points, pooled over "
            f"{pw.comparisons} comparisons, {pw.df} degrees of freedom) and {pw.seeds} paired seeds, the smallest "
            f"difference detected with {100 * POWER:.0f} % power at the corrected level 0.05/{pw.comparisons} is "
            f"**{100 * pw.detectable:.2f} points**; detecting 1 point would take {need} (statsmodels' TTestPower, "
            "paired t-test).")


def verdict_kinds(table: pd.DataFrame) -> dict[str, str]:
    """Each tested stem's verdict kind against the reference (universality.verdict_kind), the reference left out."""
    return {r["stem"]: verdict_kind(r["verdict"]) for _, r in table.iterrows() if r["verdict"] != "**reference**"}


def next_step(study: Study, table: pd.DataFrame, pw: Power | None, margin_points: float, report_command: str) -> list[str]:
    """What to do when the study cannot decide: the seeds that would (from its power `pw`, at least MIN_PAIRED_SEEDS)
    and the command that adds them to the same sweep folder (completed points are skipped)."""
    have = min((int(n) for n in table["n"] if n > 0), default=0)
    if pw is not None and pw.detectable <= pw.margin and have >= MIN_PAIRED_SEEDS:
        return []  # the study already detects a difference as large as its margin
    kinds = verdict_kinds(table)
    if kinds and all(k in CONCLUSIVE for k in kinds.values()):
        return []  # every comparison decided: more seeds would answer nothing the study asks
    if pw is not None and pw.seeds_for_margin:
        need = max(MIN_PAIRED_SEEDS, pw.seeds_for_margin, have + 1)
        why = (f"{need} paired seeds would detect a difference of ±{margin_points:g} point{'s' * (margin_points != 1)} "
               f"with {100 * POWER:.0f} % power (statsmodels' TTestPower from this study's spread; it has {have})")
    else:
        need = max(MIN_PAIRED_SEEDS, have + 1)
        why = (f"a paired test needs at least {MIN_PAIRED_SEEDS} seeds (this study has {have}); how many decide "
               f"±{margin_points:g} point{'s' * (margin_points != 1)} follows from their spread, in the power line "
               "of the next report")
    seeds = add_seeds(study, need)
    command = seeds_command(study.runs[0].sweep, seeds)
    return [f"**Next step**: {why}. Add seeds in the same sweep folder (completed points are skipped): `{command}`, "
            f"then `{report_command}`.", ""]


def add_seeds(study: Study, count: int) -> list[Any]:
    """The study's seeds, then the smallest unused integers, `count` in all."""
    seeds = sorted({r.seed for r in study.runs}, key=lambda s: (not isinstance(s, int), s if isinstance(s, int) else str(s)))
    candidate = 0
    while len(seeds) < count:
        if candidate not in seeds:
            seeds.append(candidate)
        candidate += 1
    return seeds


def epoch_table(study: Study, order: list[str]) -> list[str]:
    """Too few epochs for a curve (figures.MIN_CURVE_EPOCHS): validation accuracy after each epoch as a table."""
    labels = stem_labels(study.runs)
    means = {}
    for stem in order:
        hs = [r.history for r in completed([r for r in study.runs if labels[id(r)] == stem])
              if r.history is not None and {"epoch", "accuracy"} <= set(r.history.columns)]
        if hs:
            means[stem] = pd.concat(hs).groupby("epoch")["accuracy"].mean()
    if not means:
        return ["No training curves: these records have no per-epoch history.", ""]
    epochs = sorted({e for m in means.values() for e in m.index})
    rows = [[f"`{stem}`", *(f"{100 * m[e]:.2f} %" if e in m.index else "–" for e in epochs)] for stem, m in means.items()]
    return [f"Validation accuracy after each epoch (mean over seeds; {len(epochs)} epoch{'s' * (len(epochs) != 1)}, too "
            "few for a curve):", "", md_table(["stem", *(f"epoch {e}" for e in epochs)], "l" + "r" * len(epochs), rows), ""]


def depth_table(study: Study, order: list[str]) -> str:
    """Share of FLOPs → share of time per stage, means over seeds; – for time where layers were not timed."""
    labels = stem_labels(study.runs)
    rows = []
    for stem in order:
        shares = depth_shares(completed([r for r in study.runs if labels[id(r)] == stem]))
        rows.append([f"`{stem}`"] + [("–" if s not in shares.index else
                                      f"{100 * shares.at[s, 'share_flops']:.1f} → " + _num(100 * shares.at[s, "share_time"], 1))
                                     for s in STAGES])
    return md_table(["stem", *STAGES], "l" + "r" * len(STAGES), rows)


def tuning_section(study: Study, tuning: pd.DataFrame, table: pd.DataFrame, figure: str | None) -> list[str]:
    """The tuning stage: per stem the LR the sweeper's rule chooses, the LR its final runs used (they agree unless
    an earlier rule tuned the records), the plateau, the choice's stability and a choice at a grid edge, the curve
    with its spread over tuning seeds, and what the tuning cost."""
    choices = lr_choices(study)
    final_lr = dict(zip(table["stem"], table["lr"]))
    rows = []
    for stem, g in tuning.groupby("stem", sort=True):
        cells = " · ".join(f"{lr:g}: " + ("–" if not math.isfinite(m) else f"{100 * m:.2f} %")
                           + ("" if not math.isfinite(sd) else f" (sd {100 * sd:.2f})") + f" ({n})"
                           for lr, m, sd, n in zip(g["lr"], g["acc_mean"], g["acc_sd"], g["n"]))
        c = choices[stem].choice if stem in choices else None
        chosen = "–" if c is None else f"**{c.lr:g}**" + (f" (⚠ grid's {EDGE[c.edge]})" if c.edge else "")
        rows.append([f"`{stem}`", chosen, _lr(final_lr.get(stem, [])), "–" if c is None else plateau_text(c.plateau, choices[stem].lrs),
                     _pct(choices[stem].stability) if stem in choices else "–", cells])
    grid = sorted({lr for lr in tuning["lr"] if math.isfinite(lr)})
    tune_min, final_min = wall_minutes(study.tuning), wall_minutes(study.runs)
    cost = (f" Tuning cost: {len(study.tuning)} runs, {tune_min:.1f} min of wall time"
            + (f" ({100 * tune_min / (tune_min + final_min):.0f} % of the study's {tune_min + final_min:.1f} min)."
               if tune_min + final_min > 0 else "."))
    out = ["### LR tuning", "",
           f"Each stem was tuned on the tuning split (carved from the training set, as the validation data line says, never the "
           f"validation set above) over the learning rates {_lr(grid)} (the sweeper extends a stem's grid one step "
           "while its plateau reaches an edge, until lr_bounds stop it, so stems may have tried different LRs). The "
           "chosen LR: " + RULE + ". Stability is how often the same LR is chosen when the tuning seeds are resampled "
           "with replacement; ⚠ flags a choice at the grid's edge (the best LR may lie beyond it); sd is the spread "
           "over tuning seeds." + cost, "",
           md_table(["stem", "chosen lr", "final stage's lr", "plateau", "stability",
                     "tuning accuracy per lr (mean, sd over seeds; completed seeds)"], "lrrlrl", rows), ""]
    differ = [f"`{stem}`" for stem, t in choices.items()
              if t.choice is not None and final_lr.get(stem) and set(final_lr[stem]) != {t.choice.lr}]
    if differ:
        out += [f"The final stage of {', '.join(differ)} trained at another LR than the one this rule chooses from "
                "the same tuning runs: those runs were tuned by an earlier rule (re-run the sweep to train at this one).", ""]
    if figure:
        out += [f"![tuning]({figure})", "", CAPTIONS["tuning"], ""]
    return out


EDGE = {"lowest": "bottom", "highest": "top"}


def plateau_text(plateau: tuple[float, ...], lrs: list[float]) -> str:
    """The plateau as a range of the stem's grid when it is contiguous there, else its LRs; marked where it reaches
    an edge of the grid (the tuning cannot tell where it ends)."""
    inside = [lr for lr in lrs if plateau[0] <= lr <= plateau[-1]]
    text = f"{plateau[0]:g}–{plateau[-1]:g}" if len(plateau) > 1 and list(plateau) == inside else _lr(list(plateau))
    ends = [name for name, at in (("bottom", lrs[0]), ("top", lrs[-1])) if at in plateau]
    return text + (f" (reaches the grid's {' and '.join(ends)})" if ends else "")


def provenance(runs: list) -> list[str]:
    envs = [r.record.get("environment") or {} for r in runs]
    hws = [r.record.get("hardware") or {} for r in runs]
    lines = [f"- hardware: device {distinct([h.get('device') for h in hws])}, precision {distinct([h.get('precision') for h in hws])}, "
             f"channels_last {distinct([h.get('channels_last') for h in hws])}, threads {distinct([h.get('threads') for h in hws])}, allocator {distinct([h.get('allocator') for h in hws])}; GPU {distinct([e.get('gpu') for e in envs])}; "
             f"CPU {distinct([e.get('cpu') for e in envs])} × {distinct([e.get('cpu_count') for e in envs])} logical cores; "
             f"{distinct([e.get('platform') for e in envs])}",
             "- software: " + ", ".join(f"{k} {distinct([e.get(k) for e in envs])}" for k in
                                         ("python", "torch", "torchvision", "fastai", "hydra", "cuda") if any(e.get(k) for e in envs)),
             f"- code: git commit {distinct([e.get('git_commit') for e in envs])}"]
    walls = [float(r.record["wall_s"]) for r in runs if isinstance(r.record.get("wall_s"), (int, float))]
    starts = sorted(str(r.record["started"]) for r in runs if r.record.get("started"))
    ends = sorted(str(r.record["finished"]) for r in runs if r.record.get("finished"))
    if walls:
        lines.append(f"- wall time: {sum(walls) / 60:.1f} min summed over {len(walls)} runs (median {np.median(walls):.0f} s per run)"
                     + (f"; first start {starts[0][:19]} UTC, last finish {ends[-1][:19]} UTC" if starts and ends else ""))
    return lines


def study_plan(study: Study) -> SeedPlan | None:
    """The seed plan of a study whose seeds were chosen by power (its sweep's seed_plan.json), else None."""
    sweeps = {r.sweep for r in study.runs if r.sweep}
    return saved_plan(Path(sweeps.pop())) if len(sweeps) == 1 else None


def decided_line(table: pd.DataFrame, pw: Power | None, plan: SeedPlan | None, margin: float) -> list[str]:
    """How many comparisons with the reference the study decided (better, worse or equivalent), which it did not
    with their Δ, and why not where the seeds are at the plan's cap (compare.max_seeds)."""
    kinds = verdict_kinds(table)
    if not kinds:
        return []
    decided = [k for k in kinds.values() if k in CONCLUSIVE]
    counts = ", ".join(f"{k} {decided.count(k)}" for k in CONCLUSIVE if k in decided)
    line = (f"Decided: **{len(decided)} of {len(kinds)}** comparisons with the reference at ±{margin:g} point"
            f"{'s' * (margin != 1)}" + (f" ({counts})" if counts else ""))
    open_ = table[table["stem"].isin([s for s, k in kinds.items() if k not in CONCLUSIVE])]
    if len(open_):
        line += "; not decided: " + ", ".join(
            f"`{r['stem']}` ({kinds[r['stem']]}" + (f", Δ {100 * r['diff']:+.2f}" if math.isfinite(r["diff"]) else "") + ")"
            for _, r in open_.iterrows())
        if plan is not None and plan.needed is not None and plan.needed > plan.cap and pw is not None:
            line += (f". The study trained the most seeds its plan allows ({plan.cap}, `compare.max_seeds`), where the "
                     f"smallest difference detected with {100 * POWER:.0f} % power is {100 * pw.detectable:.2f} points: "
                     "a smaller difference can stay undecided at this cap")
    return [line + ".", ""]


def study_section(study: Study, table: pd.DataFrame, tuning: pd.DataFrame | None, figs: dict[str, str],
                  command: str) -> list[str]:
    out = ["", f"## {study.label}", ""]
    if len(table):
        reference, source, margin = reference_of(study, table)
        final = completed(study.runs)
        pw = power(table, margin / 100)  # one computation for the scope, the next step and the power line
        plan = study_plan(study)
        out += [f"Reference: **`{reference}`** ({source}); equivalence margin ±{margin:g} accuracy point"
                f"{'s' * (margin != 1)}.", "", *scope_lines(study, detect_text(pw)), pairing_line(final), split_line(final), "",
                markdown_table(table), "", *loaded_note(table), *decided_line(table, pw, plan, margin),
                *next_step(study, table, pw, margin, command), power_line(pw), "", *([plan.text(), ""] if plan else []),
                "Details per stem:", "", details_table(table, show_lr=bool(study.tuning)), "",
                *[line for note in utilisation(final, stem_labels(study.runs)).notes for line in (note, "")]]
    else:
        out += ["No records of the final stage yet (only its LR tuning).", ""]
    notes = [f"`{r['stem']}`: {r['not_completed']}" for _, r in table.iterrows() if r["not_completed"]]
    if notes:
        out += ["Not completed (excluded from the statistics): " + "; ".join(notes) + ".", ""]
    for key in ("pareto", "depth", "curves"):
        if key in figs:
            out += [f"![{key}]({figs[key]})", "", CAPTIONS[key], ""]
    if len(table) and "curves" not in figs:
        out += epoch_table(study, list(table["stem"]))
    if len(table):
        out += ["Compute by depth, share of FLOPs → share of time per stage (%, training step):", "",
                depth_table(study, list(table["stem"])), ""]
        out += stage_cost_lines(study, list(table["stem"]), figs.get("stage_roofline"))  # bytes and intensity (issue 21)
    if tuning is not None:
        out += tuning_section(study, tuning, table, figs.get("tuning"))
    varies = "stem and seed vary" + ("; each stem trains at its chosen LR" if study.tuning else "")
    return out + ["### Provenance", "", *provenance(study.runs + study.tuning), "",
                  f"Config shared by every run of this study ({varies}):", "", "```yaml",
                  OmegaConf.to_yaml(OmegaConf.create(shown_config(study))).rstrip(), "```"]


def shown_config(study: Study) -> dict[str, Any]:
    """The study's config, its data.size replaced by the images' true side where the runs read a data.root folder
    of another size (data.size picks a download only; the record's data.source_px is what the folder holds)."""
    sides = {(r.record.get("data") or {}).get("source_px") for r in study.runs + study.tuning}
    data = study.config.get("data") or {}
    if "size" not in data or len(sides) != 1 or not isinstance(side := sides.pop(), int) or str(side) == str(data["size"]):
        return study.config
    return {**study.config, "data": {**data, "size": f"{side} px (the images' shorter side; data.size={data['size']} "
                                                     "picks a download only)"}}


def render(inputs: Inputs, studies: list[Study], tables: list[pd.DataFrame], tunings: list[pd.DataFrame | None],
           figures: list[dict[str, str]], command: str, across: list[str] = ()) -> str:
    """The report; `across`: the section across contexts (analyze/report/across.py), first after the method."""
    sweeps = sorted(set(inputs.sweep_commands))
    out = ["# Stem study report", "",
           f"Generated by `{command}` from {len(inputs.runs)} result records"
           + (f" ({len(inputs.skipped)} skipped)" if inputs.skipped else "") + "."]
    if len(sweeps) == 1:  # the sweep skips completed points, so this re-reads the records unless some are missing
        out.append(f"Sweep and report in one command: `{sweeps[0]} && {command}`.")
    else:
        out += [f"Sweep command (from Hydra's multirun.yaml): `{c}`." for c in sweeps]
    out += ["", METHOD, *across]
    for study, table, tuning, figs in zip(studies, tables, tunings, figures):
        out += study_section(study, table, tuning, figs, command)
        out += warnings_section(study)  # issue 25: identical seeds, near-chance accuracy, loaded machine
    if inputs.missing or inputs.unfinished or inputs.skipped or inputs.incomplete:
        out += ["", "## Missing, unfinished and skipped points", ""]
        out += [f"- missing (asked for by the sweep, no record): stem `{s}`, seed {seed} in {d}" for d, s, seed in inputs.missing]
        out += [f"- unfinished (started, no record: killed or still running): {d}" for d in inputs.unfinished]
        out += [f"- skipped: {p} {why}" for p, why in inputs.skipped]
        out += [f"- incomplete: {p} {why}; its run is reported without it" for p, why in inputs.incomplete]
    return "\n".join(out) + "\n"
