"""The report's section across contexts (when its records span two or more): the answer in one sentence, which
stems move most, the contexts, each stem's place and verdict in every context, Kendall's τ between every pair of
rankings with its bootstrap interval, the stem × context interaction test, and a forest plot of every stem's
difference to the reference in every context (the numbers: universality.py; the contexts: contexts.py)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .contexts import Context, find_contexts
from .factors import Base, Factor, by_factor
from .figures import new_figure, save
from .render import md_table
from .scope import plural
from .statistics import reference_of
from .studies import Study
from .universality import (ALPHA, LOGIT_CLIP, RESAMPLE_SEED, RESAMPLES, Agreement, Interaction, Tau,
                           agreements, interaction, movers, rankings, rule_outcome, same_ranking_share,
                           same_ranking_threshold, taus)

HEADING = "Across contexts: is the best stem universal?"
FIGURE = "across_contexts_forest.png"
MARKERS = "osD^v<>pPX*h"


@dataclass
class Across:
    lines: list[str]     # the report's section
    summary: list[str]   # what the command prints


def across_contexts(studies: list[Study], tables: list[pd.DataFrame], out: Path) -> Across | None:
    """The section and its figure when the studies span 2 or more contexts, else None."""
    contexts, left_out = find_contexts(studies, tables)
    if len(contexts) < 2:
        return None
    rank = rankings(contexts)
    pairs = taus(rank)
    test = interaction(contexts)
    agree = agreements(contexts)
    common, places = movers(rank)
    answer = [answer_sentence(contexts, pairs, test, same_ranking_share(rank), same_ranking_threshold(contexts)),
              movers_sentence(contexts, common, places)]
    refs = [reference_of(c.study, c.table) for c in contexts]
    figure = save(forest_plot(contexts, refs), out / FIGURE)
    lines = ["", f"## {HEADING}", "", " ".join(s for s in answer if s), "",
             md_table(["context", "report section", "stems", "seeds", "reference", "best by mean accuracy"], "llrrll",
                      [[c.label, c.study.label, str(int((c.table["n"] > 0).sum())), seeds_cell(c), f"`{ref}`",
                        f"`{c.table['stem'].iloc[0]}`"] for c, (ref, _, _) in zip(contexts, refs)]), ""]
    if left_out:
        lines += ["Left out of this comparison (the same context as a study above, from another sweep or LR): "
                  + "; ".join(s.label for s in left_out) + ".", ""]
    done = [set(c.table.loc[c.table["n"] > 0, "stem"]) for c in contexts]
    partial = sorted(set.union(*done) - set(rank[0].stems))
    if partial:
        lines += [f"Places, τ and the interaction test compare the {plural(len(rank[0].stems), 'stem')} every context has; "
                  "left out: "
                  + "; ".join(f"`{s}` (not in {', '.join(c.label for c, d in zip(contexts, done) if s not in d)})"
                              for s in partial) + ".", ""]
    if len({r for r, _, _ in refs}) > 1:
        lines += ["The contexts name different reference stems; each verdict below is against its context's own.", ""]
    base, factors = by_factor(contexts)
    lines += factor_lines(contexts, base, factors)
    lines += place_table(contexts, rank, common, places) + verdict_table(contexts, agree) + tau_table(contexts, pairs)
    lines += [interaction_line(contexts, test), "", f"![forest]({figure})", "", forest_caption(refs), "", METHOD]
    summary = [f"{HEADING} {' '.join(s for s in answer if s)}"] + [
        f"tau {contexts[t.a].label} vs {contexts[t.b].label}: {tau_text(t)}" for t in pairs] + [
        f"{f.names[0]} ({contexts[base.index].label} → {f.context.label}): {tau_text(f.tau)}, "
        f"{ANSWERS[f.outcome].replace('*', '')}" for f in factors if len(f.names) == 1]
    return Across(lines, summary)


PLACES = "Place of each stem"


def readme_lines(section: str) -> list[str]:
    """What the README's study block copies of a report's section across contexts (`section`: its text from the
    heading on): the answer, the contexts, the verdicts and what held or flipped, and the τ table, cell for cell;
    not the table of places (the verdicts carry the news) nor what follows the τ table (test, figure, method)."""
    paragraphs = section.split("\n\n")[1:]
    keep = []
    for i, paragraph in enumerate(paragraphs):
        if paragraph.startswith("Stem × context interaction"):
            break
        if not (paragraph.startswith(PLACES) or (i and paragraphs[i - 1].startswith(PLACES))):
            keep.append(paragraph)
    return "\n\n".join(keep).splitlines() + [""]


def seeds_cell(c: Context) -> str:
    n = c.table.loc[c.table["n"] > 0, "n"]
    return f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"


def ordinal(rank: float) -> str:
    """1 -> 1st, 2 -> 2nd, 11 -> 11th."""
    if not math.isfinite(rank):
        return "–"
    n = int(rank)
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def tau_text(t: Tau) -> str:
    if not math.isfinite(t.tau):
        return "– (fewer than 2 shared stems or seeds)"
    interval = "" if not math.isfinite(t.lo) else f" [{t.lo:+.2f}, {t.hi:+.2f}]"
    return f"τ = {t.tau:+.2f}{interval}"


def answer_sentence(contexts: list[Context], pairs: list[Tau], test: Interaction, same_share: float,
                    threshold: float) -> str:
    """The rule fixed before the data (`compare.same_ranking_tau`, the threshold): the same ranking only when every
    pair's τ has its bootstrap lower bound at or above the threshold; it depends on the context when the data show
    it (some τ's upper bound below the threshold, or the interaction test rejects); else these seeds cannot tell,
    with the bootstrap probability that every context ranks the stems alike (`same_share`)."""
    outcome = rule_outcome(pairs, test, threshold)
    if outcome == "none":
        return "No two contexts share 2 stems with completed seeds, so their rankings cannot be compared."
    finite = [t for t in pairs if math.isfinite(t.tau)]
    low, high = min(t.tau for t in finite), max(t.tau for t in finite)
    spread = f"τ = {low:+.2f}" if low == high else f"τ from {low:+.2f} to {high:+.2f}"
    tested = math.isfinite(test.p)
    p = f"stem × context interaction p = {p_text(test.p)}" if tested else f"no interaction test: {test.failed}"
    changes = tested and test.p < ALPHA
    rule = f"compare.same_ranking_tau = {threshold:+.2f}"
    alike = ("" if not math.isfinite(same_share) else
             f"; {100 * same_share:.0f} % of bootstrap resamples rank the stems alike in every context")
    if outcome == "same":
        size = (", and the size of the differences changes with the context" if changes else
                ", and the data show no change of the differences with the context") if tested else ""
        both = "both" if len(contexts) == 2 else f"all {len(contexts)}"
        return (f"**The ranking is the same in {both} contexts**: every pair's τ ({spread}) has its 95 % bootstrap "
                f"lower bound at or above {rule}{size} ({p}{alike}).")
    if outcome == "order":
        worst = min(finite, key=lambda t: t.hi)
        return (f"**The ranking depends on the context**: the order of the stems changes beyond seed noise ({spread}; "
                f"between {contexts[worst.a].label} and {contexts[worst.b].label} {tau_text(worst)}, an interval below "
                f"{rule}){', and the differences change with the context' if changes else ''} ({p}{alike}).")
    if outcome == "differences":
        return (f"**The stems' differences depend on the context** ({p}); whether their order changes, these seeds "
                f"cannot tell: {spread}, not every τ's bootstrap lower bound is at or above {rule}, and no upper "
                f"bound is below it{alike}.")
    return (f"**These seeds cannot tell whether the ranking depends on the context**: {spread}, not every τ's "
            f"bootstrap lower bound is at or above {rule}, and no upper bound is below it; the interaction test finds "
            f"no change ({p}{alike}).")


def p_text(p: float) -> str:
    return "–" if not math.isfinite(p) else (f"{p:.2e}" if 0 < p < 1e-3 else f"{p:.4f}")


def movers_sentence(contexts: list[Context], stems: list[str], places: list[np.ndarray]) -> str:
    """Which stems move most: the largest change of place between two contexts, with where they stood."""
    if not places:
        return ""
    place = np.array(places)  # contexts x stems
    change = place.max(axis=0) - place.min(axis=0)
    if change.max() == 0:
        return f"No stem changes its place (of the {len(stems)} every context ranks)."
    most = [i for i in range(len(stems)) if change[i] == change.max()]
    where = []
    for i in most:
        by_place: dict[int, list[str]] = {}
        for c, ctx in enumerate(contexts):
            by_place.setdefault(int(place[c, i]), []).append(ctx.label)
        standing = ", ".join(f"{ordinal(k)} in {' and '.join(v)}" for k, v in sorted(by_place.items()))
        where.append(f"`{stems[i]}` ({standing})")
    verb = "moves" if len(most) == 1 else "move"
    return (f"{' and '.join(where)} {verb} most: {int(change.max())} place{'s' * bool(change.max() != 1)} "
            f"of the {len(stems)} every context ranks.")


BY_FACTOR = "One factor at a time"
ANSWERS = {"same": "the same ranking", "order": "**the ranking changes**",
           "differences": "the differences change (the order: cannot tell)", "undecided": "cannot tell",
           "none": "no 2 stems in common"}


def factor_lines(contexts: list[Context], base: Base, factors: list[Factor]) -> list[str]:
    """The table of factors: per context that differs from the base in one factor, τ of the two rankings with its
    interval, the two contexts' interaction test, the answer by the comparison's rule, and the stems that changed
    place or verdict; the contexts that differ in several factors named under it."""
    rows = []
    for f in (f for f in factors if len(f.names) == 1):
        tau = "–" if not math.isfinite(f.tau.tau) else (
            f"{f.tau.tau:+.2f}" + ("" if not math.isfinite(f.tau.lo) else f" [{f.tau.lo:+.2f}, {f.tau.hi:+.2f}]"))
        moves = "; ".join(part for part in (
            ("places: " + ", ".join(f"`{s}` {ordinal(a)} → {ordinal(b)}" for s, a, b in f.moved)) if f.moved else "",
            ("verdicts: " + ", ".join(f"`{s}` {a or '–'} → {b or '–'}" for s, a, b in f.flipped)) if f.flipped else "")
            if part) or "none"
        rows.append([f.names[0], f.context.label, f.change, str(len(f.tau.stems)), tau, p_text(f.test.p),
                     ANSWERS[f.outcome], moves])
    lines = [f"{BY_FACTOR}, from the base context **{contexts[base.index].label}** ({base.why}): each row compares "
             "the base with a context that differs from it in that factor alone, by the rule above applied to the two "
             "(Kendall's τ of their rankings with its 95 % bootstrap interval, and their stem × context interaction "
             "test); a place is among the stems both contexts ranked, a verdict is against the reference:", ""]
    if rows:
        lines += [md_table(["factor", "context", "base → context", "stems", "Kendall's τ [95 % interval]",
                            "interaction p", "answer", "stems that move"], "lllrrrll", rows), ""]
    several = [f for f in factors if len(f.names) != 1]
    if several:
        lines += ["Not one factor from the base, so in no row: " + "; ".join(
            f"{f.context.label} (differs in {' and '.join(f.names)}: {f.change})" for f in several) + ".", ""]
    return lines


def place_table(contexts: list[Context], rank, stems: list[str], places: list[np.ndarray]) -> list[str]:
    if not places:
        return []
    rows = []
    for i, s in enumerate(stems):
        cells = [f"{ordinal(p[i])} ({100 * r.mean_of([s])[0]:.2f} %)" for p, r in zip(places, rank)]
        change = max(p[i] for p in places) - min(p[i] for p in places)
        rows.append([f"`{s}`", *cells, str(int(change))])
    order = sorted(range(len(rows)), key=lambda i: (float(np.mean([p[i] for p in places])), stems[i]))
    return [f"{PLACES} in each context (1st = best; mean accuracy over the seeds every compared stem "
            "completed there):", "",
            md_table(["stem", *(c.label for c in contexts), "largest change"], "l" + "r" * (len(contexts) + 1),
                     [rows[i] for i in order]), ""]


def verdict_cell(table: pd.DataFrame, stem: str) -> str:
    row = table[table["stem"] == stem]
    if not len(row):
        return "–"
    r = row.iloc[0]
    if r["verdict"] == "**reference**":
        return "reference"
    diff = "–" if not math.isfinite(r["diff"]) else f"{100 * r['diff']:+.2f}"
    interval = "" if not math.isfinite(r["diff_lo"]) else f" [{100 * r['diff_lo']:+.2f}, {100 * r['diff_hi']:+.2f}]"
    return f"{diff}{interval} {r['verdict']}"


OUTCOME = {"held": "held", "flipped": "**flipped**", "changed": "changed", "none": "no conclusion anywhere"}


def verdict_table(contexts: list[Context], agree: list[Agreement]) -> list[str]:
    """Per stem Δ vs the reference [adjusted interval] and verdict in each context, and whether the verdict held."""
    stems = sorted({s for c in contexts for s in c.table.loc[c.table["n"] > 0, "stem"]})
    outcome = {a.stem: a for a in agree}
    rows = [[f"`{s}`", *(verdict_cell(c.table, s) for c in contexts),
             (OUTCOME[outcome[s].outcome] + (f": {outcome[s].kinds[0]}" if outcome[s].outcome == "held" else ""))
             if s in outcome else "–"] for s in stems]
    by = {k: [a for a in agree if a.outcome == k] for k in OUTCOME}
    summary = [f"- Held in every context: {listing(by['held'], True)}.",
               f"- Flipped (better than the reference in one context, worse in another): {listing(by['flipped'])}.",
               f"- Changed with the context (conclusive in some, not the same in all): {listing(by['changed'])}."]
    if by["none"]:
        names = ", ".join(f"`{a.stem}`" for a in by["none"])
        summary.append(f"- No conclusion in any context (inconclusive or untested): {names}.")
    return ["Against the reference in each context (Δ in accuracy points with its Bonferroni-adjusted interval, and "
            "the verdict, from the context's own table):", "",
            md_table(["stem", *(c.label for c in contexts), "in every context"], "l" * (len(contexts) + 2), rows), "",
            *summary, ""]


def listing(agree: list[Agreement], held: bool = False) -> str:
    if not agree:
        return "none"
    if held:
        return "; ".join(f"`{a.stem}` {a.kinds[0]}" for a in agree)
    return "; ".join(f"`{a.stem}` ({', '.join(k or '–' for k in a.kinds)})" for a in agree)


def tau_table(contexts: list[Context], pairs: list[Tau]) -> list[str]:
    rows = [[contexts[t.a].label, contexts[t.b].label, str(len(t.stems)),
             "–" if not math.isfinite(t.tau) else f"{t.tau:+.2f}",
             "–" if not math.isfinite(t.lo) else f"[{t.lo:+.2f}, {t.hi:+.2f}]"
             + (f" ({t.undefined} resamples undefined)" if t.undefined else "")] for t in pairs]
    return ["Kendall's τ between the rankings of every pair of contexts (+1: the same order, −1: reversed), with its "
            "95 % bootstrap interval over seeds:", "",
            md_table(["context", "context", "stems", "Kendall's τ", "95 % bootstrap interval"], "llrrr", rows), ""]


def interaction_line(contexts: list[Context], test: Interaction) -> str:
    what = (f"Stem × context interaction ({plural(len(test.stems), 'stem')} every context has × {len(contexts)} contexts, "
            f"{test.runs} runs): ")
    if not math.isfinite(test.f):
        return what + f"no test, {test.failed}."
    sds = ", ".join(f"{c.label} {sd:.3f}" for c, sd in zip(contexts, test.sd))
    return (what + "F-test of logit(accuracy) ~ seed + stem + stem × context against the model without stem × "
            "context, by weighted least squares with each run weighted by 1 / its context's residual variance "
            f"(statsmodels WLS; residual SD on the logit scale: {sds}): F = {test.f:.2f} on {test.df} and "
            f"{test.df_resid} degrees of freedom, **p = {p_text(test.p)}**.")


def forest_caption(refs: list[tuple[str, str, float]]) -> str:
    margin = refs[0][2]
    return ("Each stem's difference to the reference (stem − reference, accuracy points, mean over paired seeds) in "
            "every context, with its Bonferroni-adjusted interval (simultaneous 95 % within the context; a point "
            f"without bars had too few seeds for one); the band is the equivalence margin ±{margin:g} point"
            f"{'s' * (margin != 1)}.")


METHOD = (
    "Kendall's τ is τ-b (scipy.stats.kendalltau) of the mean accuracies of the stems every context has (a stem missing "
    "from a context is left out of τ, the places and the interaction test), over the seeds every such stem completed "
    "in each context. Its interval is a percentile bootstrap: each context's seeds are resampled with replacement on "
    "their own (the same draw for all its stems: a seed is one block for them, paired as each context's section "
    f"says), the ranking recomputed from the resampled means, {RESAMPLES:,} resamples from numpy's default generator "
    f"seeded {RESAMPLE_SEED} (so the report regenerates byte for byte), the 2.5th and 97.5th percentiles; the same resamples "
    "give the share in which every context ranks the stems alike. The answer follows a rule the preset fixes before "
    "the data (`compare.same_ranking_tau`): the same ranking only when every pair's lower bound is at or above it; "
    "the ranking depends on the context when some pair's upper bound is below it, the stems' differences when the "
    f"interaction test rejects at p < {ALPHA:g}; otherwise these seeds cannot tell. The interaction test compares "
    "the stems' differences on the logit scale (accuracy held within "
    f"{100 * LOGIT_CLIP:g} point of 0 and 100 %), so that contexts at different accuracy levels compare, and weighs "
    "each context by its own residual variance, so that a noisy context does not pass for interaction.")


def forest_plot(contexts: list[Context], refs: list[tuple[str, str, float]]) -> Figure:
    """Rows: the stems tested against the reference; in each row one marker per context (its colour and shape in
    the legend), with its adjusted interval; 0 and the equivalence margin drawn."""
    references = {r for r, _, _ in refs}
    stems = sorted({s for c, (ref, _, _) in zip(contexts, refs) for s in c.table.loc[c.table["n"] > 0, "stem"] if s != ref})
    k = len(contexts)
    fig, axes = new_figure(1, 1, figsize=(8.5, 1.2 + 0.32 * k * max(1, len(stems)) + 0.25 * k))
    ax = axes[0, 0]
    cmap = [f"C{i % 10}" for i in range(k)]
    step = 0.8 / k
    for j, (c, (ref, _, _)) in enumerate(zip(contexts, refs)):
        t = c.table.set_index("stem")
        label = c.label  # in the legend once per context
        for i, s in enumerate(stems):
            if s not in t.index or s == ref or not math.isfinite(t.at[s, "diff"]):
                continue
            y = i - 0.4 + step * (j + 0.5)  # the y axis runs downwards: the first context on top of a stem's row
            d, lo, hi = (100 * t.at[s, col] for col in ("diff", "diff_lo", "diff_hi"))
            xerr = [[d - lo], [hi - d]] if math.isfinite(lo) else None
            ax.errorbar([d], [y], xerr=xerr, fmt=MARKERS[j % len(MARKERS)], color=cmap[j], ms=6, capsize=3,
                        elinewidth=1.3, label=label)
            label = None
    margin = refs[0][2]
    ax.axvspan(-margin, margin, color="0.9", zorder=0, label=f"equivalence margin ±{margin:g}")
    ax.axvline(0, color="0.3", lw=1)
    for i in range(1, len(stems)):
        ax.axhline(i - 0.5, color="0.85", lw=0.8)
    ax.set_yticks(range(len(stems)), [f"{s}" for s in stems], fontsize=9)
    ax.set_ylim(len(stems) - 0.5, -0.5)
    ax.set_xlabel("Δ accuracy vs the reference (points), Bonferroni-adjusted interval", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), title="context", title_fontsize=8)
    ref_text = f"`{next(iter(references))}`" if len(references) == 1 else "each context's own"
    fig.suptitle(f"each stem against the reference {ref_text}, in every context".replace("`", ""), fontsize=10)
    return fig
