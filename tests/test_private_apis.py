"""The private library parts stemlab relies on (experiments/hydra_private.py, the launcher's job_results_replaced)
behave as it relies on: a Hydra, submitit or hydra-submitit-launcher upgrade that changes one fails here."""
from __future__ import annotations

import copy
import inspect

import submitit
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf

from experiments.hydra_private import (apply_overrides, basic_sweeper, get_args_parser, get_overrides_dirname,
                                      share_config_store, structured_config_source)
from hydra_plugins.stemlab_launcher.launcher import job_results_replaced


def parse(*overrides: str):
    return OverridesParser.create().parse_overrides(list(overrides))


def test_hydras_argument_parser_gives_what_train_py_checks():
    args = get_args_parser().parse_args(["-m", "seed=0,1", "stem=resnet_7x7", "--config-name", "other"])
    assert (args.multirun, args.overrides, args.config_name) == (True, ["seed=0,1", "stem=resnet_7x7"], "other")
    plain = get_args_parser().parse_args(["--help"])
    assert (plain.help, plain.hydra_help, plain.shell_completion, plain.multirun) == (True, False, False, False)


def test_the_basic_sweeper_expands_a_sweep_into_points_in_order():
    BasicSweeper = basic_sweeper()
    assert BasicSweeper.__name__ == "BasicSweeper" and "super(BasicSweeper, self)" in inspect.getsource(BasicSweeper)
    batches = BasicSweeper.split_arguments(parse("seed=0,1", "stem=a,b", "train.lr=0.1"), None)
    assert batches == [[["seed=0", "stem=a", "train.lr=0.1"], ["seed=0", "stem=b", "train.lr=0.1"],
                        ["seed=1", "stem=a", "train.lr=0.1"], ["seed=1", "stem=b", "train.lr=0.1"]]]
    # what experiments/sweeper.py's launch loop calls on it
    assert all(callable(getattr(BasicSweeper, m)) for m in ("split_overrides_to_chunks", "validate_batch_is_legal",
                                                             "_parse_config"))
    assert list(BasicSweeper.split_overrides_to_chunks([[1], [2], [3]], 2)) == [[[1], [2]], [[3]]]


def test_a_points_folder_is_named_and_its_values_applied_as_hydra_does():
    assert get_overrides_dirname(parse("stem=b", "seed=1", "logger=none"), ["logger"], ",", "=") == "seed=1,stem=b"
    cfg = OmegaConf.create({"train": {"lr": 0.1, "bs": 8}})
    apply_overrides(parse("train.lr=0.5"), cfg)
    assert OmegaConf.to_container(cfg) == {"train": {"lr": 0.5, "bs": 8}}


def test_the_submitit_launcher_collects_results_through_the_hook_the_launcher_replaces():
    # KeepFailuresLocal unpacks job.submission().args as (overrides, job_dir_key, job_num, ...) and relies on launch()
    # calling job.results() for every job; submitit's error for a job without a result keeps its name
    assert list(inspect.signature(BaseSubmititLauncher.__call__).parameters)[1:4] == ["sweep_overrides", "job_dir_key",
                                                                                     "job_num"]
    assert ".results()" in inspect.getsource(BaseSubmititLauncher.launch)
    assert issubclass(submitit.core.utils.UncompletedJobError, Exception)
    original = submitit.Job.results
    with job_results_replaced(lambda job: ["replaced"]):
        assert submitit.Job.results(None) == ["replaced"]
    assert submitit.Job.results is original


def test_a_copy_of_hydras_structured_config_source_shares_the_config_store():
    # Hydra copies its config repository (this source included) for every group that --help lists
    share_config_store()
    source = structured_config_source()("stemlab", "structured://experiments")  # the module it imports
    clone = copy.deepcopy(source)
    assert (clone.provider, clone.path) == ("stemlab", "experiments") and type(clone) is type(source)
    store = getattr(clone, "store", ConfigStore.instance())  # Hydra 1.4 has no attribute: it looks the singleton up
    assert store is ConfigStore.instance()



def test_hydra_saves_a_points_config_through_the_function_the_full_disk_wrapper_replaces(monkeypatch, caplog):
    import errno
    from pathlib import Path

    import pytest
    from hydra.core import utils as hydra_utils

    from experiments.hydra_private import save_config_past_a_full_disk

    assert "_save_config(task_cfg, " in inspect.getsource(hydra_utils.run_job)  # looked up in the module at each call
    failures = iter([OSError(errno.ENOSPC, "No space left on device"), OSError(errno.EACCES, "Permission denied")])

    def failing_save(cfg, filename, output_dir):
        raise next(failures)

    monkeypatch.setattr(hydra_utils, "_save_config", failing_save)
    save_config_past_a_full_disk()
    hydra_utils._save_config(OmegaConf.create({"a": 1}), "config.yaml", Path("point/.hydra"))  # a full disk: warned
    assert caplog.messages == ["point/.hydra/config.yaml was not saved: No space left on device."]
    with pytest.raises(PermissionError):  # anything else is Hydra's as before
        hydra_utils._save_config(OmegaConf.create({"a": 1}), "config.yaml", Path("point/.hydra"))
