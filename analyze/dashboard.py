"""``python -m analyze dashboard ENTITY/PROJECT [--group G] [--dry-run]``: the stem-comparison workspace in W&B.

Built with W&B's own ``wandb-workspaces`` library from the keys every stemlab run logs
(``experiments.tracking``): accuracy per stem across seeds, accuracy against train-step time and
FLOPs, compute by depth (the ``depth/<stage>/…`` summary scalars) and the per-layer table. Runs are
grouped by ``stem.name`` (so seeds aggregate) and, with ``--group``, filtered to one W&B group (a
sweep). Building the workspace needs no network; saving it does. ``--dry-run`` prints the view W&B
would receive, as JSON, instead of saving it.
"""
from __future__ import annotations

import argparse
from typing import Any

from analyze.report.cli import help_text
from stems.base import StemlabError, first_line


class DashboardError(StemlabError):
    """A bad project name, a missing library, or a save W&B refused."""


def add_dashboard_parser(sub: Any) -> None:
    p = sub.add_parser("dashboard", help="create the stem-comparison workspace in a W&B project",
                       description=help_text(__doc__))
    p.add_argument("project", metavar="ENTITY/PROJECT", help="the W&B project the runs were logged to")
    p.add_argument("--group", default=None, help="only the runs of this W&B group (a sweep, e.g. stem_study_mnist5k)")
    p.add_argument("--dry-run", action="store_true", help="print the workspace spec (JSON) instead of saving it")
    p.set_defaults(func=run_dashboard)


def split_project(project: str) -> tuple[str, str]:
    entity, _, name = project.partition("/")
    if not entity or not name or "/" in name:
        raise DashboardError(f"{project!r} is not ENTITY/PROJECT; give both, e.g. my-team/stemlab.")
    return entity, name


def build_workspace(entity: str, project: str, group: str | None = None) -> Any:
    """The workspace (a ``wandb_workspaces.workspaces.Workspace``); nothing leaves the machine."""
    try:  # imported only for this command (the GPU machines travel without W&B)
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
    except ImportError as e:
        raise DashboardError(f"the dashboard needs W&B's wandb-workspaces library ({e}); "
                             "pip install wandb-workspaces.") from e
    from experiments.model import GROUPS as STAGES  # the depth/<group>/... scalars every run logs (torch: here)

    by_stem = wr.Config("stem.name")

    def per_stem(title: str, metrics: list[str]) -> Any:
        """Bars per stem: the mean over its runs (seeds), with their min-max range."""
        return wr.BarPlot(title=title, metrics=[wr.SummaryMetric(m) for m in metrics], groupby=by_stem,
                          groupby_aggfunc="mean", groupby_rangefunc="minmax", orientation="v")

    def vs(y: str, x: str, title: str, log_x: bool = False) -> Any:
        return wr.ScatterPlot(title=title, x=wr.SummaryMetric(x), y=wr.SummaryMetric(y), log_x=log_x)

    wide = wr.Layout(x=0, y=0, w=24, h=12)
    sections = [
        ws.Section(name="Accuracy per stem (across seeds)", is_open=True, panels=[
            per_stem("final validation accuracy", ["valid_acc"]),
            per_stem("best validation accuracy", ["best_valid_acc"]),
            wr.LinePlot(title="validation accuracy per epoch", x="epoch", y=["accuracy"], groupby=by_stem,
                        groupby_aggfunc="mean", groupby_rangefunc="minmax"),
        ], panel_settings=ws.SectionPanelSettings(x_axis="epoch")),
        ws.Section(name="Accuracy vs cost", is_open=True, panels=[
            vs("valid_acc", "train_ms_step", "accuracy vs train-step time (ms, measured in training)"),
            vs("valid_acc", "flops_train_per_image", "accuracy vs training FLOPs per image", log_x=True),
            vs("valid_acc", "train_img_s", "accuracy vs training throughput (img/s)"),
        ]),
        ws.Section(name="Compute by depth", is_open=True, panels=[
            per_stem("share of forward FLOPs by stage", [f"depth/{s}/share_flops" for s in STAGES]),
            per_stem("share of forward time by stage", [f"depth/{s}/share_time" for s in STAGES]),
            per_stem("forward + backward ms by stage", [f"depth/{s}/{t}" for s in STAGES for t in ("ms_fwd", "ms_bwd")]),
        ]),
        ws.Section(name="Per-layer cost", is_open=True, panels=[
            wr.WeavePanelSummaryTable(table_name="layers", layout=wide),
        ]),
    ]
    runset = ws.RunsetSettings(groupby=[ws.Config("stem.name")],
                               filters=[ws.Metric("Group") == group] if group else [])
    return ws.Workspace(entity=entity, project=project, sections=sections, runset_settings=runset,
                        name="stem comparison" + (f" · {group}" if group else ""),
                        settings=ws.WorkspaceSettings(x_axis="epoch", max_runs=100))


def workspace_spec(workspace: Any) -> str:
    """The view ``Workspace.save()`` uploads, as JSON (the library keeps its serialiser private)."""
    return workspace._to_model().model_dump_json(by_alias=True, exclude_none=True, indent=1)


def run_dashboard(args: argparse.Namespace) -> int:
    entity, project = split_project(args.project)
    workspace = build_workspace(entity, project, args.group)
    if args.dry_run:
        print(workspace_spec(workspace))
        return 0
    try:
        workspace.save()
    except Exception as e:  # no login, no network, no such project: one sentence, not wandb's traceback
        reason = first_line(e, type(e).__name__)
        raise DashboardError(f"cannot save the workspace to W&B project {args.project!r} ({reason}); run `wandb login` "
                             "on a machine with network access, or inspect it offline with --dry-run.") from e
    print(f"saved the stem-comparison workspace: {workspace.url}")
    return 0
