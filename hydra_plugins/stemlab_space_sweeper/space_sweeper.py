"""`hydra/sweeper=space`: a design-space study in one command (RegNet's method applied to stems).

    python train.py -m +experiment=stem_space_mnist5k                    # 48 sampled stems x seed 0, 2 epochs
    python train.py -m hydra/sweeper=space hydra.sweeper.samples=50 hydra.sweeper.band=flops:resnet_7x7:0.1 seed=0,1

`samples` stems are drawn from stems.space with `sample_seed` (the same settings draw the same stems), each inside
`band` when it is set: `flops:<stem or number>:<tolerance>` keeps the stems whose forward FLOPs at the run's input
size are within ±tolerance of the stem's (or the number's). Every other swept key (`params` and the command line,
e.g. seed=0,1) is expanded as Hydra's basic sweeper does, and every sampled stem runs at every such point, through
the configured launcher (basic, joblib, submitit), in `<sweep.dir>/sample<NNN>/<the point's overrides>/`.
`<sweep.dir>/space.json` lists the samples (parameters, readable code, forward FLOPs). Re-running the command draws
the same stems into the same directories, so every completed run is skipped (train.py's resume rule)."""
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from experiments.hydra_private import basic_sweeper
from experiments.sweeper import LaunchingSweeper


@dataclass
class ChoicesConf:  # _sampling.Choices, as a config: the values the sampler draws from
    depths: List[int] = field(default_factory=lambda: [1, 2, 3, 4])
    widths: List[int] = field(default_factory=lambda: [16, 24, 32, 48, 64, 96])
    kernels: List[int] = field(default_factory=lambda: [3, 5, 7])
    patchify: bool = True
    mechanisms: List[str] = field(default_factory=lambda: ["conv", "max", "s2d"])
    norms: List[str] = field(default_factory=lambda: ["bn", "ln"])
    acts: List[str] = field(default_factory=lambda: ["relu", "silu", "gelu"])


@dataclass  # no `from __future__ import annotations`: Hydra's plugin scanner runs this module before registering it
class SpaceSweeperConf:
    _target_: str = "hydra_plugins.stemlab_space_sweeper.space_sweeper.SpaceSweeper"
    samples: int = 24  # stems drawn from the space
    sample_seed: int = 0  # the draw's seed (the runs' own seed is the `seed` key)
    band: Optional[str] = None  # flops:<stem or number>:<tolerance>, e.g. flops:resnet_7x7:0.1
    choices: ChoicesConf = field(default_factory=ChoicesConf)
    max_batch_size: Optional[int] = None  # jobs handed to the launcher at once (None: all)
    params: Optional[Dict[str, str]] = None  # the other swept values, as for Hydra's basic sweeper


ConfigStore.instance().store(group="hydra/sweeper", name="stemlab_space", node=SpaceSweeperConf, provider="stemlab")


class SpaceSweeper(LaunchingSweeper, basic_sweeper()):  # runs in Hydra's plugin scan: its BasicSweeper
    """Hydra's basic sweeper (point expansion, launcher set-up) with sampled stems crossed with its points."""

    def __init__(self, samples: int, sample_seed: int, band: Optional[str], choices: Any,
                 max_batch_size: Optional[int] = None, params: Optional[Dict[str, str]] = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.samples, self.sample_seed, self.band = samples, sample_seed, band
        self.choices = OmegaConf.to_container(choices) if OmegaConf.is_config(choices) else dict(choices)

    def sweep(self, arguments: List[str]) -> Any:
        from . import _sampling  # imports torch: only when a sweep runs

        assert self.config is not None and self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        parsed = parser.parse_overrides([*self._parse_config(), *arguments])
        points = [list(p) for batch in self.split_arguments(parsed, None) for p in batch]
        try:
            if any(o.key_or_group == "stem" or o.key_or_group.startswith("stem.") for o in parsed):
                raise _sampling.SamplingError("hydra/sweeper=space samples the stem itself; drop stem=… and stem.… "
                                              "from the command line and the preset's sweeper params.")
            shape = self.image_shape(points[0])
            samples = _sampling.draw(self.samples, self.sample_seed, self.choices, shape, self.band)
        except _sampling.StemlabError as e:  # the band, the choices, or a band the draws cannot fill
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        sweep_dir = self.save_sweep_config()
        _sampling.write_plan(sweep_dir, self.samples, self.sample_seed, self.choices, self.band, shape, samples)
        unnamed = ["stem", *_sampling.STEM_KEYS]  # sample<NNN> names the stem
        jobs = [[*point, *_sampling.stem_overrides(s.params), *self.folder_overrides(f"sample{s.index:03d}", unnamed)]
                for s in samples for point in points]
        return [self.launch_all(jobs)]

    def image_shape(self, point: List[str]) -> tuple:
        """(in_channels, image size) of the runs: the data group's, from a composed point."""
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, point)
        return tuple(OmegaConf.to_object(cfg.data).image_shape())
