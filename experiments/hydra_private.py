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
  well under a second). docs/DESIGN.md, Contracts."""
from __future__ import annotations

import copy
import importlib
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra._internal.core_plugins import basic_sweeper as basic_sweeper_module
from hydra._internal.utils import get_args_parser

__all__ = ["apply_overrides", "basic_sweeper", "get_args_parser", "get_overrides_dirname", "share_config_store",
           "structured_config_source"]


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
