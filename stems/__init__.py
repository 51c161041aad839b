"""What varies: the stem registry and every stem family (one module per family).

    stems.available() -> sorted names
    stems.spec(name)  -> StemSpec (family, source, defaults, contract)
    stems.build(name, in_channels, out_channels=None, **params) -> nn.Module (contract checked)
"""
from .registry import StemError, StemSpec, available, build, check_image_size, register, spec
from . import conv_stack, large_kernel, light, patchify, resblock, space_to_depth  # noqa: F401  (importing a family registers its stems)

__all__ = ["StemError", "StemSpec", "available", "build", "check_image_size", "register", "spec"]
