"""What varies: the stem registry and every stem family (one module per family).

    stems.available() -> sorted canonical names (one per distinct network)
    stems.aliases()   -> {alias: canonical name}
    stems.spec(name)  -> StemSpec (family, source, defaults, contract); an alias gives its canonical stem
    stems.build(name, in_channels, out_channels=None, **params) -> nn.Module (contract checked)
"""
from .registry import StemError, StemSpec, aliases, available, build, check_image_size, register, spec
from . import conv_stack, large_kernel, light, patchify, resblock, space, space_to_depth  # noqa: F401  (importing a family registers its stems)

__all__ = ["StemError", "StemSpec", "aliases", "available", "build", "check_image_size", "register", "spec"]
