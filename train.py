"""Hydra entry point: compose the config, run one training (experiments.run), return the metric for sweepers.

    python train.py                                  # xresnet_3conv on xresnet18, mnist5k
    python train.py stem=resnet_7x7 trunk=xresnet50 train.epochs=5
    python train.py -m stem=resnet_7x7,xresnet_3conv seed=0,1,2
"""
from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from experiments.config import ConfigError, check_overrides, register_configs

log = logging.getLogger("stemlab")
register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    import experiments  # heavy imports after Hydra has parsed the command line (--help stays fast)

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        return experiments.run(cfg, out_dir)
    except experiments.RunFailed as e:
        log.error("%s", e)
        if multirun:
            return math.nan  # one failing point never stops a sweep; its record says why
        sys.exit(1)
    except ValueError as e:  # bad input: every stemlab error is a ValueError whose message names the fix
        log.error("error: %s", e)
        if multirun:
            return math.nan
        sys.exit(2)


if __name__ == "__main__":
    try:
        check_overrides(hydra._internal.utils.get_args_parser().parse_args().overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    main()
