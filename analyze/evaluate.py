"""python -m analyze evaluate RUN_DIR [data.KEY=VALUE ...] and python -m analyze export RUN_DIR [--out FILE].

evaluate: the saved model of a completed run (its model.pt, rebuilt from result.json) on the validation set of
the run's dataset, in eval mode, through fastai's Learner.validate: loss and accuracy. data.KEY=VALUE overrides
change the dataset's settings (another data.root, data.tune_split=false, a larger data.n_valid, ...).

export: the saved model as a torch.export program (model.pt2: the graph and the weights, loadable without
stemlab's code by torch.export.load), with a free batch dimension; it is loaded back and run once on a batch of
two, and its output compared with the model's, before the command says it is done.
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

from stems.base import StemlabError, atomic_write, first_line


class EvaluateError(StemlabError):
    """A run folder or an override the command cannot use; one sentence naming the fix."""


def add_evaluate_parser(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="the saved model of a run on a validation set (eval mode)",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("run_dir", metavar="RUN_DIR", help="a completed run's folder (result.json and model.pt)")
    p.add_argument("overrides", nargs="*", metavar="data.KEY=VALUE", help="dataset settings to change, e.g. data.root=DIR")
    p.add_argument("--bs", type=int, default=None, help="batch size (default: the run's train.bs)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.set_defaults(func=run_evaluate)


def add_export_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="the saved model of a run as a torch.export program, checked by running it once",
                       description=__doc__.split("\n\n")[2])
    p.add_argument("run_dir", metavar="RUN_DIR", help="a completed run's folder (result.json and model.pt)")
    p.add_argument("--out", default=None, help="where the program goes (default: RUN_DIR/model.pt2)")
    p.set_defaults(func=run_export)


def read_run(run_dir: Path) -> dict[str, Any]:
    """The run's record, when it has saved weights to load."""
    from experiments.checkpoint import WEIGHTS
    from experiments.record import RESULT_FILE, Unreadable, read_record

    record_path, weights = run_dir / RESULT_FILE, run_dir / WEIGHTS
    if not record_path.is_file():
        raise EvaluateError(f"{run_dir} has no {RESULT_FILE}; pass a run folder (outputs/DATE/TIME_.../ or a sweep point's).")
    record = read_record(record_path)
    if isinstance(record, Unreadable):
        raise EvaluateError(f"{record}; re-run the run that wrote it.")
    if not (record.get("model") or {}).get("weights") or not weights.is_file():
        raise EvaluateError(f"{run_dir} has no saved model (model.pt); train it with train.save_model=true "
                            "(a sweep point keeps none by default).")
    return record


def data_config(record: dict[str, Any], overrides: list[str]) -> Any:
    """The run's data settings with the data.KEY=VALUE overrides applied (typed by the dataset's schema)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from experiments.schema import DATASETS

    bad = [o for o in overrides if not o.startswith("data.") or "=" not in o]
    if bad:
        raise EvaluateError(f"{bad[0]!r} is not a data setting; give dataset settings as data.KEY=VALUE (e.g. data.root=DIR).")
    data = record["config"]["data"]
    schema = next((d for d in DATASETS if d.name == data.get("name")), None)
    if schema is None:
        raise EvaluateError(f"the run's dataset {data.get('name')!r} is not one this stemlab knows; update stemlab.")
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(schema), data)
        return OmegaConf.merge(cfg, OmegaConf.from_dotlist([o.removeprefix("data.") for o in overrides]))
    except OmegaConfBaseException as e:
        raise EvaluateError(f"{' '.join(overrides)}: {first_line(e)}; use the dataset's keys and types "
                            f"(experiments/schema.py, {schema.__name__}).") from None


def run_evaluate(args: argparse.Namespace) -> int:
    from experiments.checkpoint import load_trained_model
    from experiments.data import build_data
    from experiments.fit import validate

    run_dir = Path(args.run_dir)
    record = read_run(run_dir)
    data = build_data(data_config(record, args.overrides), bs=args.bs or record["config"]["train"]["bs"],
                      seed=record["config"]["seed"], device=args.device)
    loss, acc = validate(load_trained_model(run_dir).to(args.device), data)
    print(f"{record.get('name', run_dir.name)}: valid_loss {loss:.4f}  accuracy {100 * acc:.2f} % on "
          f"{data.info.get('n_valid', '?')} images ({data.info.get('valid_split', 'valid')} split of "
          f"{record['config']['data']['name']})")
    return 0


def export_path(out: Path) -> Path:
    """Where the program goes, checked before the export: a file in an existing folder."""
    if out.is_dir() or not out.name:
        raise EvaluateError(f"--out {out} is a folder; give the program's file name, e.g. --out {out / 'model.pt2'}.")
    if not out.parent.is_dir():
        what = "is a file" if out.parent.exists() else "does not exist"
        raise EvaluateError(f"--out {out}: {out.parent} {what}; give a file in an existing folder.")
    return out


def run_export(args: argparse.Namespace) -> int:
    import torch

    from experiments.checkpoint import load_trained_model

    run_dir = Path(args.run_dir)
    record = read_run(run_dir)
    out = export_path(Path(args.out) if args.out else run_dir / "model.pt2")
    spec = record["model"]
    model = load_trained_model(run_dir)
    x = torch.randn(2, spec["in_channels"], spec["image_size"], spec["image_size"])
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    archive = io.BytesIO()  # torch.export.save wants a name ending in .pt2 or a buffer: the temp file has neither
    torch.export.save(program, archive)
    try:
        atomic_write(out, archive.getvalue())
    except OSError as e:
        raise EvaluateError(f"cannot write {out} ({e.strerror or type(e).__name__}); give --out a file in a folder "
                            "you can write to, with room for the program.") from None
    loaded = torch.export.load(str(out)).module()
    with torch.no_grad():
        expected, got = model(x), loaded(x)
    if not torch.allclose(expected, got, rtol=1e-4, atol=1e-5):
        raise EvaluateError(f"the exported program's output differs from the model's (max {float((expected - got).abs().max()):.2e}); "
                            "report it with the run folder.")
    print(f"wrote {out}: loaded back and run once on a batch of 2, output equal to the model's "
          f"(max difference {float((expected - got).abs().max()):.1e})")
    return 0
