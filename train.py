"""Hydra entry point: compose the config, run one training (experiments.run), return the metric for sweepers.

    python train.py                                  # xresnet_3conv on xresnet18, mnist5k
    python train.py stem=resnet_7x7 trunk=xresnet50 train.epochs=5
    python train.py -m stem=resnet_7x7,xresnet_3conv seed=0,1,2
"""
from __future__ import annotations

import logging
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

# Hydra's plugin scan executes its core plugin modules again, defining their classes anew: done first, so that the
# config source experiments.hydra_private.share_config_store patches is the one Hydra uses (--help: 0.4 s of CPU, not 1.4)
Plugins.instance()
from experiments.hydra_private import get_args_parser, save_config_past_a_full_disk  # noqa: E402
from experiments.schema import register_configs  # noqa: E402  (torch-free, stems/manifest.json: a fast --help)
from stems.base import StemlabError, first_line  # noqa: E402

log = logging.getLogger("stemlab")
save_config_past_a_full_disk()  # a sweep point's .hydra/ on a full disk: its record and one sentence, not a traceback
try:
    register_configs()
except StemlabError as e:  # stems/manifest.json unreadable: one sentence naming the command that rewrites it
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from experiments.checkpoint import Interrupted, interruptible  # heavy: after Hydra has parsed the command line

    last_point[:] = [HydraConfig.get()]
    try:
        with interruptible():  # SIGINT/SIGTERM/SIGUSR1: checkpoint kept, `interrupted` record, exit 128 + signal
            return run_job(cfg)
    except Interrupted as e:
        stop(e)  # a sweep stops too: its interrupted point resumes when the sweep is re-run


last_point: list = []  # the Hydra config of the sweep's last point: between two points Hydra holds none


def stop(e) -> NoReturn:
    """The "interrupted" line with the command that resumes, then exit 128 + signal."""
    hc = HydraConfig.get() if HydraConfig.initialized() else next(iter(last_point), None)  # None: no point started
    log.warning("interrupted by %s %s; resume with: %s", e.signal_name, e.note, resume_command(sys.argv, hc))
    sys.exit(e.exit_code)


def sweep_main() -> None:
    """main() for every point of a sweep; a stop signal outside a point's run (between two points) also ends in the
    "interrupted" line naming the sweep's folder to re-run."""
    from experiments.checkpoint import Interrupted, interruptible

    try:
        with interruptible():
            main()
    except Interrupted as e:
        e.note = "between two points (every finished point's record is kept)"
        stop(e)


def help_main() -> None:
    """--help composes the config from stems/manifest.json unchecked (the registry's check imports torch: --help would
    be slow): a choice missing there is one sentence, naming the stale manifest when that is why."""
    from hydra.errors import MissingConfigException

    try:
        main()
    except MissingConfigException as e:
        from stems import manifest

        print(f"error: {manifest.stale() or first_line(e)}", file=sys.stderr)
        sys.exit(2)


def resume_command(argv: list[str], hc) -> str:
    """The command that resumes this run: the same command line, with the folder it wrote to fixed (a single
    run's default folder is a new timestamp, a sweep's too), so that it finds this run's checkpoint; the command as
    given when no point had started (`hc` None)."""
    if hc is None:
        return shlex.join(["python", *argv])
    key, folder = ("hydra.sweep.dir", hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else ("hydra.run.dir", hc.run.dir)
    given = [a for a in argv[1:] if not a.startswith(f"{key}=")]
    return shlex.join(["python", argv[0], *given, f"{key}={folder}"])


def run_job(cfg: DictConfig) -> float:
    import experiments  # heavy imports after Hydra has parsed the command line (--help stays fast)

    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    if cfg.train.save_model is None:
        with open_dict(cfg):  # the default: a single run keeps its weights, a sweep point does not
            cfg.train.save_model = not multirun
    if multirun:
        from experiments import record, sweep
        from experiments.config import to_dict

        if cfg.logger.name == "wandb" and not cfg.logger.group:
            with open_dict(cfg):  # every run of a sweep shares one W&B group
                cfg.logger.group = sweep.group_name(hc.sweep.dir, Path(hc.runtime.cwd))
        previous = sweep.completed_result(out_dir, to_dict(cfg))
        if previous is not None:
            log.info("already completed: %s (delete its result.json to re-run)", out_dir / "result.json")
            return record.metric(previous)
    started = time.perf_counter()
    if multirun:
        from experiments.rundir import FolderRefused, check_room

        try:
            check_room(out_dir, "hydra.sweep.dir")
        except FolderRefused as e:  # the disk filled up during the sweep: every next point would fail alike
            try:
                saved = f"record: {sweep.write_failed(out_dir, to_dict(cfg), e, started)}"
            except OSError:
                saved = "no record could be written"
            log.error("error: %s; the sweep stops at this point (%s); resume it with: %s",
                      str(e).rstrip("."), saved, resume_command(sys.argv, hc))
            sys.exit(2)
    try:
        # a sweep's folder, absolute: its points share the study's format file (a relative one names the cwd's)
        return experiments.run(cfg, out_dir, Path(hc.runtime.cwd, hc.sweep.dir) if multirun else None)
    except experiments.RunFailed as e:
        log.error("%s", e)
        if multirun:
            return math.nan  # one failing point never stops a sweep; its record says why
        sys.exit(1)
    except Exception as e:  # stemlab's bad-input errors are StemlabErrors whose message names the fix
        if not multirun and not isinstance(e, StemlabError):
            raise  # a bug, not bad input: its traceback is the useful message
        log.error("error: %s", e)
        if not multirun:
            sys.exit(2)
        sweep.write_failed(out_dir, to_dict(cfg), e, started)  # in a sweep, the point's record says why
        return math.nan


if __name__ == "__main__":
    # submitit's workers (hydra/launcher=local_queue|slurm) unpickle main() in a fresh interpreter: give them
    # this project's packages even when it is not pip-installed
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH")]))
    # Hydra creates the run directory before it calls main(): every setting (of every point of a sweep) is
    # checked first, so that a refused command writes nothing
    args = get_args_parser().parse_args()
    if not (args.help or args.hydra_help or args.shell_completion):  # -sc install=bash: no run to check
        from experiments.config import ConfigError, check_command_line  # torch: the registry checks the stem

        try:
            check_command_line(args.overrides, multirun=args.multirun, config_name=args.config_name or "config")
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
    if args.multirun:
        sweep_main()
    elif args.help or args.hydra_help:
        help_main()
    else:
        main()
