"""A study's scope, read from its records: the budget it trained under (dataset, image size, epochs, batch, trunk,
runs, wall time, device), what every run shared and what varied, the smallest difference it could detect (the
study's Power, computed once by comparison.power) and, from those values, what its answers cannot show."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from experiments.same_run import NOT_THE_RUN
from experiments.schema import TrainConf

from .comparison import MIN_PAIRED_SEEDS, POWER, Power
from .data import Run
from .pairing import format_text, run_format
from .studies import Study, stem_labels

HEADING = "**Scope** (read from the records):"
NOT_RECORDED = "not recorded"
# train keys the scope names on their own (budget, LR) or as the format (pairing.FORMAT_KEYS; device)
OWN_TRAIN_KEYS = ("epochs", "bs", "lr", "device", "precision", "channels_last", *(NOT_THE_RUN["train"] or ()))


def distinct(values: list[Any]) -> str:
    """The one value, or each value with its count of runs (most common first); – when none is recorded."""
    counts = Counter(str(v) for v in values if v is not None)
    if not counts:
        return "–"
    return next(iter(counts)) if len(counts) == 1 else "; ".join(f"{v} ({n} run{'s' * (n != 1)})" for v, n in counts.most_common())


def wall_minutes(runs: list[Run]) -> float:
    return sum(float(r.record["wall_s"]) for r in runs if isinstance(r.record.get("wall_s"), (int, float))) / 60


def _group(run: Run, name: str) -> dict[str, Any]:
    return run.config.get(name) or {}


def _listed(value: Any) -> str:
    return "/".join(map(str, value)) if isinstance(value, list) else str(value)


def trunk_shape(run: Run) -> str:
    return ", ".join(f"{k} {_listed(v)}" for k, v in _group(run, "trunk").items() if k != "name") or NOT_RECORDED


def image_px(run: Run) -> str:
    """The side of the images the stem received (the record's model), and the source's where it was resized."""
    side = (run.record.get("model") or {}).get("image_size")
    source = (run.record.get("data") or {}).get("source_px")
    if side is None:
        return NOT_RECORDED
    return f"{side} px" + (f" (from {source}-px source images)" if isinstance(source, int) and source != side else "")


def optimizer_text(run: Run) -> str:
    """The schedule every run trains with (experiments/fit.py, as the train schema says) and its train settings."""
    rest = ", ".join(f"{k} {v}" for k, v in _group(run, "train").items() if k not in OWN_TRAIN_KEYS)
    return TrainConf.__doc__.strip().rstrip(".") + (f" ({rest})" if rest else "")


def split_text(run: Run) -> str:
    data = run.record.get("data") or {}
    if data.get("n_train") is None:
        return NOT_RECORDED
    drawn = "one split per seed" if data.get("split") == "per seed" else f"split seed {data.get('split_seed')}"
    return f"{data['n_train']:,} training / {data.get('n_valid', 0):,} {data.get('valid_source', '')} validation images, {drawn}"


def augment_text(run: Run) -> str:
    # a loader that crops or flips records it in data.augment (Imagenette has since it was added); the others have none
    return str((run.record.get("data") or {}).get("augment", "none"))


def device_text(run: Run) -> str:
    hw, env = run.record.get("hardware") or {}, run.record.get("environment") or {}
    device = hw.get("device")
    if device == "cuda":
        return f"GPU ({env.get('gpu') or 'name not recorded'})"
    if device == "cpu":
        return f"CPU ({env.get('cpu') or 'name not recorded'}, {env.get('cpu_count', '?')} logical cores)"
    return str(device or NOT_RECORDED)


def _train(key: str) -> Callable[[Run], Any]:
    return lambda run: _group(run, "train").get(key, NOT_RECORDED)


def _environment(key: str) -> Callable[[Run], Any]:
    return lambda run: (run.record.get("environment") or {}).get(key, NOT_RECORDED)


def commit_text(commit: Any) -> str:
    return commit[:12] if isinstance(commit, str) and commit != NOT_RECORDED else NOT_RECORDED


@dataclass(frozen=True)
class Setting:
    label: str
    value: Callable[[Run], Any]
    final_only: bool = False       # differs between the tuning and the final stage by design
    named_when_fixed: bool = True  # False: named only where it varies (versions and code: the Provenance lists them)


SETTINGS = (
    Setting("dataset", lambda run: _group(run, "data").get("name", NOT_RECORDED)),
    Setting("image size", image_px),
    Setting("epochs", _train("epochs")),
    Setting("batch size", _train("bs")),
    Setting("trunk", lambda run: _group(run, "trunk").get("name", NOT_RECORDED)),
    Setting("trunk shape", trunk_shape),
    Setting("optimizer", optimizer_text),
    Setting("augmentation", augment_text),
    Setting("data", split_text, final_only=True),
    Setting("format", lambda run: format_text(run_format(run))),
    Setting("device", device_text),
    Setting("torch", _environment("torch"), named_when_fixed=False),
    Setting("fastai", _environment("fastai"), named_when_fixed=False),
    Setting("code commit", lambda run: commit_text(_environment("git_commit")(run)), named_when_fixed=False),
)
PEAK_LR = Setting("peak LR", _train("lr"))  # a setting only where the study was not tuned per stem
BUDGET = ("dataset", "image size", "epochs", "batch size", "trunk", "device")  # the budget line names these


def settings_of(study: Study) -> dict[str, list[str]]:
    """Each setting's values over the study's runs (its final runs alone where the stages differ by design)."""
    return {s.label: [str(s.value(r)) for r in (study.runs if s.final_only else study.runs + study.tuning)]
            for s in SETTINGS + (() if study.tuning else (PEAK_LR,))}


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def seeds_text(seeds: list[Any]) -> str:
    ints = sorted(s for s in seeds if isinstance(s, int))
    if len(ints) == len(seeds) and len(ints) > 2 and ints == list(range(ints[0], ints[-1] + 1)):
        return f"{len(ints)} seeds, {ints[0]}–{ints[-1]}"
    return f"{plural(len(seeds), 'seed')}: " + ", ".join(map(str, sorted(seeds, key=str)))


def detect_text(pw: Power | None) -> str:
    """A stem study's smallest detectable difference: its Power's (comparison.power, computed once per study)."""
    if pw is None:
        return (f"unknown, as no stem was tested against the reference (a test needs {MIN_PAIRED_SEEDS} paired seeds "
                "whose differences spread)")
    return (f"**{100 * pw.detectable:.2f} points** at {100 * POWER:.0f} % power (the Power line below); a smaller true "
            "difference may go undetected")


def scope_lines(study: Study, detect: str) -> list[str]:
    """The Scope paragraph: budget, held fixed, varies, the smallest detectable difference (`detect`: a stem study's
    detect_text, the design-space study's band), what it cannot show."""
    values = settings_of(study)
    varying = {label: distinct(v) for label, v in values.items() if len(set(v)) > 1}
    shown = {s.label for s in SETTINGS if s.named_when_fixed} | {PEAK_LR.label}
    fixed = {label: v[0] for label, v in values.items() if len(set(v)) == 1 and label in shown}

    def one(label: str) -> str:
        """The setting's value, or its values joined by "or" where they vary (named under varies)."""
        return " or ".join(Counter(values[label])) if values.get(label) else NOT_RECORDED

    epochs = one("epochs") + " epoch" + "s" * (one("epochs") != "1")
    stems = len(set(stem_labels(study.runs).values()))
    seeds = sorted({r.seed for r in study.runs}, key=str)
    done = sum(r.status == "completed" for r in study.runs)
    every = study.runs + study.tuning
    timed = [r for r in every if isinstance(r.record.get("wall_s"), (int, float))]
    runs = (f"{plural(len(study.runs), 'final run' if study.tuning else 'run')} ({plural(stems, 'stem')}, "
            f"{plural(len(seeds), 'seed')}"
            + (f", {done} completed" if done != len(study.runs) else "") + ")"
            + (f" and {len(study.tuning)} tuning runs" if study.tuning else ""))
    budget = (f"{one('dataset')} at {one('image size')}, {epochs} at batch {one('batch size')}, trunk "
              f"{one('trunk')}; {runs}; {wall_minutes(timed):.1f} min of wall time summed over "
              + (f"its {len(every)} runs" if len(timed) == len(every) else f"the {len(timed)} of {len(every)} runs that recorded it")
              + f", on {one('device')}")
    in_budget = [label for label in BUDGET if label in fixed]
    held = "; ".join(([", ".join(in_budget) + " (as above)"] if in_budget else [])
                     + [f"{label}: {value}" for label, value in fixed.items() if label not in BUDGET]
                     + ([f"seed: {seeds[0]}"] if len(seeds) == 1 else []))
    varies = [f"the stem ({stems})"] + ([f"the seed ({seeds_text(seeds)})"] if len(seeds) > 1 else [])
    if study.tuning:
        varies.append("the LR, tuned per stem (the details table)")
    varies += [f"**{label}**: {text}" for label, text in varying.items()]
    cannot = [f"rankings at convergence (after {epochs} a ranking may measure early training speed)",
              f"at image sizes other than {one('image size').split(' (')[0]}", f"with trunks other than {one('trunk')}",
              f"on datasets other than {one('dataset')}"]
    if not study.tuning:
        cannot.append(f"at learning rates other than {one('peak LR')} (every stem trained at it, not at its own best)")
    return [HEADING, f"- budget: {budget}.", f"- held fixed: {held}.", "- varies: " + "; ".join(varies) + ".",
            f"- smallest difference it could detect: {detect}.",
            "- cannot show: " + "; ".join(cannot) + ".", ""]

