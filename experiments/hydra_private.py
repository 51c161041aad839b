"""The private parts of Hydra (`hydra._internal`) that stemlab needs, imported here and nowhere else; Hydra has no
public equivalent of them. tests/test_private_apis.py checks that each still behaves as stemlab relies on, so that a
Hydra upgrade that changes one fails there, not in a run.

- `get_args_parser`: train.py parses its command line as Hydra will, to check every setting before Hydra creates
  a directory (experiments.config.check_command_line);
- `basic_sweeper()`, Hydra's BasicSweeper: point expansion (`split_arguments`), batching and the launcher's set-up;
  the tuned and the design-space sweepers extend it (with experiments.sweeper), and the config checks expand a sweep
  as it does;
- `apply_overrides` and `get_overrides_dirname`: a sweep point composed, and its folder named, as Hydra's config
  loader does;
- `share_config_store`: Hydra 1.3's StructuredConfigSource, whose copies share the ConfigStore (train.py --help in
  well under a second);
- `save_config_past_a_full_disk`: `hydra.core.utils._save_config`, which writes a sweep point's `.hydra/*.yaml` before
  the point runs, outside anything a launcher or the task can catch. docs/DESIGN.md, Contracts."""
from __future__ import annotations

import copy
import errno
import importlib
import logging
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra._internal.core_plugins import basic_sweeper as basic_sweeper_module
from hydra._internal.utils import get_args_parser
from hydra.core import utils as hydra_utils

__all__ = ["apply_overrides", "basic_sweeper", "get_args_parser", "get_overrides_dirname", "save_config_past_a_full_disk",
           "share_config_store", "structured_config_source"]


def basic_sweeper() -> type:
    """Hydra's BasicSweeper as its module holds it now. Hydra's plugin scan executes its core plugins' modules again
    (hydra.core.plugins), and BasicSweeper.__init__ names its class through the module (`super(BasicSweeper, self)`):
    a subclass of a class taken before the scan fails there. A sweeper plugin's module runs during the scan, after
    the core plugins', so a class built on this call there is the one Hydra runs."""
    return basic_sweeper_module.BasicSweeper


def apply_overrides(overrides: list[Any], cfg: Any) -> None:
    """Apply parsed value overrides to a composed config in place, as Hydra's config loader does after composing."""
    ConfigLoaderImpl._apply_overrides_to_config(overrides, cfg)


def structured_config_source() -> type:
    """The class of Hydra's `structured://` config source (Hydra's plugin scan executes its module again, defining
    the class anew: train.py scans first, so that the class patched here is the one Hydra uses)."""
    return importlib.import_module("hydra._internal.core_plugins.structured_config_source").StructuredConfigSource


def share_config_store() -> None:
    """Hydra 1.3 deep-copies its whole ConfigStore for every config group it lists (StructuredConfigSource keeps the
    store, and each CachingConfigRepository deep-copies its sources): about 85 copies for `train.py --help`, most of
    its time. Hydra 1.4 looks the singleton up instead (facebookresearch/hydra#2928); here a copy of the source shares
    the store (a class defined anew by a later plugin scan copies slowly, never wrongly)."""
    source = structured_config_source()
    if "store" in getattr(source, "__annotations__", {}):  # 1.3: the source holds the store
        source.__deepcopy__ = lambda self, memo: copy.copy(self)  # provider, path and the one ConfigStore


def save_config_past_a_full_disk() -> None:
    """On a full disk, Hydra's `_save_config` raises OSError 28 inside its run_job, before the point's task runs and
    outside any handler: the whole sweep ends in a traceback. Wrapped here, a full disk there is one warning, and the
    point runs on to meet the full disk itself: train.py then writes its small `failed` record and stops the sweep
    in one sentence with the resume command."""
    save = hydra_utils._save_config
    if getattr(save, "past_a_full_disk", False):
        return

    def save_or_warn(cfg: Any, filename: str, output_dir: Any) -> None:
        try:
            save(cfg, filename, output_dir)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            logging.getLogger("stemlab").warning("%s was not saved: %s.", output_dir / filename, e.strerror)

    save_or_warn.past_a_full_disk = True
    hydra_utils._save_config = save_or_warn
