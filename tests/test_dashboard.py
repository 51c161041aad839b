"""`python -m analyze dashboard`: the workspace is built and checked offline; saving is W&B's job."""
from __future__ import annotations

import json

import pytest
import wandb
import wandb_workspaces.reports.v2 as wr

from analyze import __main__ as cli
from analyze.dashboard import build_workspace

STAGES = ["stem", "stage1", "stage2", "stage3", "stage4", "head"]  # every group a run logs depth/<group>/... for


def panels(workspace) -> dict[str, list]:
    return {s.name: s.panels for s in workspace.sections}


def summary_keys(panel) -> list[str]:
    return [m.name for m in panel.metrics]


def test_the_workspace_compares_stems_across_seeds_cost_and_depth():
    workspace = build_workspace("me", "stemlab", group="stem_study_mnist5k")
    assert (workspace.entity, workspace.project) == ("me", "stemlab")
    sections = panels(workspace)
    assert list(sections) == ["Accuracy per stem (across seeds)", "Accuracy vs cost", "Compute by depth", "Per-layer cost"]

    accuracy = sections["Accuracy per stem (across seeds)"]
    assert [type(p) for p in accuracy] == [wr.BarPlot, wr.BarPlot, wr.LinePlot]
    assert [summary_keys(p) for p in accuracy[:2]] == [["valid_acc"], ["best_valid_acc"]]
    for bars in accuracy[:2]:  # one bar per stem: the mean over its seeds, with their range
        assert (bars.groupby, bars.groupby_aggfunc, bars.groupby_rangefunc) == (wr.Config("stem.name"), "mean", "minmax")
    curves = accuracy[2]
    assert (curves.x, curves.y) == ("epoch", ["accuracy"])  # the epoch axis tracking.py defines, not W&B's step

    cost = sections["Accuracy vs cost"]
    assert all(type(p) is wr.ScatterPlot and p.y == wr.SummaryMetric("valid_acc") for p in cost)
    assert [p.x.name for p in cost] == ["train_ms_step", "flops_train_per_image", "train_img_s"]

    depth = sections["Compute by depth"]
    assert [summary_keys(p) for p in depth] == [
        [f"depth/{s}/share_flops" for s in STAGES], [f"depth/{s}/share_time" for s in STAGES],
        [f"depth/{s}/{t}" for s in STAGES for t in ("ms_fwd", "ms_bwd")]]
    table, = sections["Per-layer cost"]
    assert type(table) is wr.WeavePanelSummaryTable and table.table_name == "layers"

    runs = workspace.runset_settings
    assert [g.name for g in runs.groupby] == ["stem.name"]
    assert runs.filters == "Metric(\"Group\") == 'stem_study_mnist5k'"  # the library keeps filters as text


def test_without_a_group_every_run_of_the_project_is_shown():
    assert build_workspace("me", "stemlab").runset_settings.filters in ("", [])


def test_dry_run_prints_the_view_wandb_would_receive(capsys):
    assert cli.main(["dashboard", "me/stemlab", "--group", "g1", "--dry-run"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert (view["entity"], view["project"], view["displayName"]) == ("me", "stemlab", "stem comparison · g1")
    sections = view["spec"]["section"]["panelBankConfig"]["sections"]
    assert [p["viewType"] for s in sections for p in s["panels"]] == \
        ["Bar Chart", "Bar Chart", "Run History Line Plot", "Scatter Plot", "Scatter Plot", "Scatter Plot",
         "Bar Chart", "Bar Chart", "Bar Chart", "Weave"]
    runset, = view["spec"]["section"]["runSets"]
    assert runset["filters"]["filters"] == [
        {"key": {"section": "run", "name": "group"}, "op": "=", "value": "g1", "disabled": False}]
    assert runset["grouping"] == [{"section": "config", "name": "stem.value.name"}]


@pytest.mark.parametrize("project", ["stemlab", "me/", "/stemlab", "me/stemlab/extra"])
def test_a_project_without_its_entity_is_one_sentence(project, capsys):
    assert cli.main(["dashboard", project, "--dry-run"]) == 2
    assert capsys.readouterr().err == f"error: {project!r} is not ENTITY/PROJECT; give both, e.g. my-team/stemlab.\n"


def test_saving_without_a_login_is_one_sentence(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    wandb.teardown()  # wandb reads the environment once per process setup
    assert cli.main(["dashboard", "me/stemlab"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot save the workspace to W&B project 'me/stemlab' (No API key configured")
    assert err.endswith("or inspect it offline with --dry-run.\n") and err.count("\n") == 1
