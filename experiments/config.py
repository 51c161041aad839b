"""Hydra configuration: compose the config of a command line and check it before anything runs.

Hydra creates a run's directory before it calls the task, so train.py calls `check_command_line` first: it
composes the config of the run, or of every point of a sweep (expanded as Hydra's BasicSweeper expands it),
and refuses a bad one with a ConfigError whose message is one sentence naming the key and the values it
accepts. The types and keys come from the structured configs of experiments.schema; the accepted values
from their `Rule`s; a few checks span groups (the stem's stride, the memory a batch needs)."""
from __future__ import annotations

import copy
import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Iterator

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

import stems
from stems import manifest
from stems.base import StemlabError, first_line
from profiler.stem_cost import cost

from .hydra_private import apply_overrides, basic_sweeper, get_overrides_dirname
from .match import check_match
from .rundir import overlong_name
from .schema import STEM_KEYS, StemConf, register_configs, stem_node

__all__ = ["CONF_DIR", "ConfigError", "check_command_line", "compose", "register_configs", "stem_node", "to_dict"]

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("stem", "trunk", "data", "train", "logger")
# A batch of fp32 input images may take at most this share of RAM: the activations of a CNN are many times
# the size of its input, so a larger batch cannot train on this machine (and would fail after minutes).
MEMORY_SHARE = 16
TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "text"}


class ConfigError(StemlabError):
    """A setting that cannot run; the message is one sentence naming the key and the values it accepts."""


def check_command_line(overrides: list[str], multirun: bool = False, config_name: str = "config") -> int:
    """Check the config of `python train.py [-m] OVERRIDES` (every point of a sweep); returns the number of
    configs checked. Raises ConfigError before anything is written."""
    check_manifest()
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        check_choices(overrides)
        if not multirun:
            cfg = compose_job(config_name, overrides, with_hydra=True)
            check_config(cfg, overrides)
            check_run_dir(cfg)
            return 1
        checked = 0
        for point, cfg in sweep_points(config_name, overrides):
            check_config(cfg, point)
            checked += 1
        return checked


def compose(overrides: list[str], config_name: str = "config") -> DictConfig:
    """The checked config of a single run with these overrides (what train.py would run)."""
    check_manifest()
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        check_choices(overrides)
        cfg = compose_job(config_name, overrides)
    check_config(cfg, overrides)
    return cfg


def check_manifest() -> None:
    """The stem group is built from stems/manifest.json (torch-free, for --help): a run starts only when it still
    describes the live registry, so a stale manifest cannot give a run other keys or defaults than its stem's."""
    problem = manifest.stale()
    if problem:
        raise ConfigError(problem)


def compose_job(config_name: str, overrides: list[str], with_hydra: bool = False) -> DictConfig:
    try:
        return hydra_compose(config_name, overrides=overrides, return_hydra_config=with_hydra)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(explain(e, overrides)) from None


def check_choices(overrides: list[str]) -> None:
    """Unknown group choices (stem=nope, trunk=…, data=…), swept or not, in one sentence each.

    Hydra would also refuse them, but in several lines."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return  # a syntax error: composing reports it
    loader = GlobalHydra.instance().config_loader()
    for o in parsed:
        if o.key_or_group in GROUPS:
            values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
            valid = loader.get_group_options(o.key_or_group)
            bad = [v for v in values if v not in valid]
            alias = next((v for v in bad if o.key_or_group == "stem" and v in stems.aliases()), None)
            if alias:
                raise ConfigError(f"stem {alias!r} is an alias of {stems.aliases()[alias]!r} (one network, one name "
                                  f"in a study); use stem={stems.aliases()[alias]}.")
            if bad:
                raise ConfigError(f"unknown {o.key_or_group} {', '.join(map(repr, bad))}; choose one of: {', '.join(valid)}.")


def sweep_points(config_name: str, overrides: list[str]) -> Iterator[tuple[list[str], DictConfig]]:
    """Every point of a sweep with its job config, as Hydra's BasicSweeper expands the sweep and as its config
    loader composes a point: group choices first (composed once per distinct combination), then the values.

    Another sweeper (e.g. a search over an interval) has no list of points: its fixed settings are checked."""
    gh = GlobalHydra.instance()
    try:
        sweep_cfg = gh.hydra.compose_config(config_name, overrides, run_mode=RunMode.MULTIRUN, from_shell=True,
                                            with_log_configuration=False)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(explain(e, overrides)) from None
    sweeper = sweep_cfg.hydra.sweeper
    basic = basic_sweeper()
    if sweeper._target_ != f"{basic.__module__}.{basic.__name__}":
        fixed = [o for o in overrides if not is_sweep(o)]
        check_point_dir(sweep_cfg, OverridesParser.create().parse_overrides(fixed), 0, named_by_sweeper=True)
        yield overrides, compose_job(config_name, fixed)
        return
    # what BasicSweeper.sweep does: the preset's hydra.sweeper.params, then the command line's task overrides
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    parser = OverridesParser.create(config_loader=gh.config_loader())
    repository = gh.config_loader().repository
    composed: dict[tuple[str, ...], DictConfig] = {}
    batches = basic.split_arguments(parser.parse_overrides([*params, *sweep_cfg.hydra.overrides.task]), None)
    for num, point in enumerate(point for batch in batches for point in batch):
        parsed = parser.parse_overrides(point)
        check_point_dir(sweep_cfg, parsed, num)
        # Hydra's own split (defaults_list.Overrides): a group's choice selects configs, anything else is a value
        choices = tuple(o.input_line for o in parsed
                        if repository.group_exists(o.key_or_group) and not isinstance(o.value(), dict))
        if choices not in composed:
            composed[choices] = compose_job(config_name, list(choices))
        cfg = copy.deepcopy(composed[choices])
        values = [o for o in parsed if o.input_line not in choices and not o.is_hydra_override()]
        try:  # the values are applied after composing, as Hydra's config loader does
            apply_overrides(values, cfg)
        except (HydraException, OmegaConfBaseException) as e:
            raise ConfigError(explain(e, point)) from None
        yield point, cfg


def check_point_dir(sweep_cfg: DictConfig, overrides: list, num: int, named_by_sweeper: bool = False) -> None:
    """A sweep point's folder (hydra.sweep.subdir: by default the point's overrides) stays inside hydra.sweep.dir: a
    value holding `/..` would put the point's record outside the sweep; and its names fit the filesystem. Computed as
    Hydra's config loader does. `named_by_sweeper`: a sweeper other than Hydra's basic one may set hydra.sweep.subdir
    itself (stemlab's do), so the fix offered is shorter overrides."""
    names = sweep_cfg.hydra.job.config.override_dirname
    task = [o for o in overrides if not o.is_hydra_override()]
    with open_dict(sweep_cfg):
        sweep_cfg.hydra.job.num = num
        sweep_cfg.hydra.job.override_dirname = get_overrides_dirname(task, list(names.exclude_keys), names.item_sep,
                                                                     names.kv_sep)
    subdir = Path(str(sweep_cfg.hydra.sweep.subdir))
    if subdir.is_absolute() or ".." in subdir.parts:
        culprit = next((o.input_line for o in task if "/" in o.input_line), f"hydra.sweep.subdir={subdir}")
        raise ConfigError(f"{culprit} would put a sweep point's folder ({subdir}) outside hydra.sweep.dir; "
                          "use a value without '/' in it.")
    sweep_dir = Path(str(sweep_cfg.hydra.sweep.dir))
    overlong = overlong_name(sweep_dir / subdir)
    if overlong and overlong[0] in sweep_dir.parts:
        raise ConfigError(too_long("hydra.sweep.dir's folder name", *overlong, "use a shorter hydra.sweep.dir."))
    if overlong:
        by_number = "" if named_by_sweeper else ", or name the points by number: 'hydra.sweep.subdir=${hydra.job.num}'"
        raise ConfigError(too_long("a sweep point's folder name", *overlong,
                                   f"shorten the overrides or move them into a preset in conf/experiment/{by_number}."))


def check_run_dir(cfg: DictConfig) -> None:
    """A single run's folder names fit the filesystem (the default folder names the stem's non-default parameters)."""
    try:
        run_dir = Path(str(cfg.hydra.run.dir))
    except OmegaConfBaseException:  # a pattern only Hydra's run resolves (e.g. ${hydra.job.num}): Hydra says why
        return
    overlong = overlong_name(run_dir)
    if overlong:
        raise ConfigError(too_long("the run's folder name", *overlong, "set a shorter one with hydra.run.dir=FOLDER."))


def too_long(what: str, name: str, limit: int, fix: str) -> str:
    shown_name = name if len(name) <= 60 else f"{name[:57]}..."
    return (f"{what} ({shown_name}) is {len(os.fsencode(name))} bytes long, over the filesystem's limit of {limit} bytes "
            f"per name; {fix}")


def is_sweep(override: str) -> bool:
    return OverridesParser.create().parse_override(override).is_sweep_override()


def check_config(cfg: DictConfig, overrides: list[str]) -> None:
    """Every key against its schema and rule, then the checks that span groups."""
    check_node(cfg, "")
    for group in ("stem", "data", "logger"):  # the name selects the code that runs: it must be the chosen option's
        chosen = OmegaConf.get_type(cfg[group]).name
        if cfg[group].name != chosen:
            raise ConfigError(f"{group}.name={cfg[group].name} differs from the chosen {group} {chosen!r}; "
                              f"choose another {group} with {group}=NAME, not {group}.name.")
    shape = OmegaConf.to_object(cfg.data).image_shape()
    check_image_size(cfg, shape)
    check_stem(cfg, shape)


def check_stem(cfg: DictConfig, shape: tuple[int, int]) -> None:
    """The stem's parameters build a stem (on the meta device: shapes only), so a bad point of a stem's parameter
    space is refused before Hydra writes anything, not when the run builds its model."""
    channels, size = shape
    node = {k: v for k, v in OmegaConf.to_container(cfg.stem, resolve=True).items() if k not in STEM_KEYS}
    try:
        cost(cfg.stem.name, channels, size, cfg.stem.out_channels, node)
    except StemlabError as e:
        raise ConfigError(str(e)) from None
    if cfg.stem.match:  # its target (a stem or a number) is checked now; the width search runs with the run
        try:
            check_match(cfg.stem.name, channels, cfg.stem.out_channels, size, cfg.stem.match, node)
        except StemlabError as e:
            raise ConfigError(f"stem.match={cfg.stem.match}: {e}") from None


def check_node(node: DictConfig, path: str) -> None:
    """Unknown keys, missing values and values outside a key's rule, recursively (OmegaConf checks only types)."""
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key in node:
        if key not in fields and not (path == "" and key == "hydra"):
            raise ConfigError(unknown_key(path, str(key), schema))
    for key, f in fields.items():
        full = f"{path}.{key}" if path else key
        if OmegaConf.is_missing(node, key):
            raise ConfigError(f"{full} has no value; set it with {full}=VALUE ({accepted(f)}).")
        value = node[key]
        rule = f.metadata.get("rule")
        if isinstance(value, DictConfig):
            check_node(value, full)
        elif not finite(value):  # inf passes `> 0`, and a non-finite setting is erased (null) in the record
            raise ConfigError(f"{full}={shown(value)} is not a finite number; use {accepted(f)}.")
        elif rule and value is not None and not rule.test(value):
            raise ConfigError(f"{full}={shown(value)} is not valid; use {rule.text}.")


def finite(value: Any) -> bool:
    """False for a float (or a list holding one) that is inf or nan."""
    values = value if isinstance(value, ListConfig) else [value]
    return all(not isinstance(v, float) or math.isfinite(v) for v in values)


def check_image_size(cfg: DictConfig, shape: tuple[int, int]) -> None:
    """The stem divides the image by its stride exactly, and a batch of input images fits the machine."""
    channels, size = shape
    try:
        stems.check_image_size(cfg.stem.name, size)
    except ValueError as e:
        raise ConfigError(f"data.image_size={size}: {e}") from None
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    bs, need = cfg.train.bs, cfg.train.bs * channels * size * size * 4
    if need <= ram / MEMORY_SHARE:
        return
    key, fix = f"train.bs={bs}", f"train.bs ≤ {max(1, int(ram / MEMORY_SHARE / (channels * size * size * 4)))}"
    stride = stems.spec(cfg.stem.name).stride
    largest = math.isqrt(int(ram / MEMORY_SHARE / (bs * channels * 4))) // stride * stride
    if "image_size" in cfg.data and largest >= stride:
        key, fix = f"data.image_size={size} with train.bs={bs}", f"data.image_size ≤ {largest} or {fix}"
    raise ConfigError(f"{key} is too large for this machine: a batch of {bs}×{channels}×{size}×{size} fp32 images "
                      f"needs {need / 2**30:,.1f} GiB, more than 1/{MEMORY_SHARE} of its {ram / 2**30:.0f} GiB of RAM; "
                      f"use {fix}.")


def unknown_key(path: str, key: str, schema: type) -> str:
    keys = [f.name for f in dataclasses.fields(schema)]
    if issubclass(schema, StemConf):
        return f"stem {schema.name!r} has no parameter {key!r}; its parameters are: {', '.join(keys[1:])}."
    return f"{path or 'the config'} has no key {key!r}; its keys are: {', '.join(keys)}."


def accepted(f: dataclasses.Field) -> str:
    """What a field accepts, in words: its rule, else its type."""
    rule = f.metadata.get("rule")
    return rule.text if rule else TYPE_WORDS.get(f.type, "a value of its type")


def shown(value: Any) -> str:
    return str(OmegaConf.to_container(value) if isinstance(value, ListConfig) else value)


def explain(error: Exception, overrides: list[str]) -> str:
    """One sentence for an error Hydra or OmegaConf raised while composing: an unknown key or a value of the
    wrong type, named with the values it accepts; anything else, Hydra's own message on one line."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OmegaConfBaseException) and cause.full_key:
            schema, key = cause.object_type, str(cause.key)
            if dataclasses.is_dataclass(schema) and isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
                return unknown_key(cause.full_key.rpartition(".")[0], key, schema)
            if dataclasses.is_dataclass(schema) and isinstance(cause, ValidationError):
                field = next(f for f in dataclasses.fields(schema) if f.name == key)
                return f"{given(cause.full_key, overrides)} is not valid; use {accepted(field)}."
            if isinstance(cause, ValidationError):  # an element of a list: OmegaConf's sentence names the type
                listed = cause.full_key.partition("[")[0]
                return f"{given(listed, overrides)} is not valid: {first_line(cause).rstrip('.')}."
        cause = cause.__cause__ or cause.__context__
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def given(key: str, overrides: list[str]) -> str:
    """`key=value` as the command line gave it."""
    for o in reversed(OverridesParser.create().parse_overrides(overrides)):  # the last one wins, as in Hydra
        if o.key_or_group == key:
            return f"{key}={o.get_value_element_as_str()}"
    return key


def to_dict(cfg) -> dict:
    """The resolved config as plain Python (for the record and W&B)."""
    return OmegaConf.to_container(cfg, resolve=True)
