"""What varies: the stem registry and every stem family (one module per family).

    stems.available() -> sorted canonical names (one per distinct network)
    stems.aliases()   -> {alias: canonical name}
    stems.spec(name)  -> StemSpec (family, source, defaults, contract); an alias gives its canonical stem
    stems.build(name, in_channels, out_channels=None, **params) -> nn.Module (contract checked)

The registry, the families (torch, fastai: seconds) and the named points of the design space (stems/points/*.yaml)
load on first use (PEP 562), so that `stems.base` (the project's error and atomic writes) and every command's
`--help` start without them.
"""
from functools import cache
from importlib import import_module

__all__ = ["StemError", "StemSpec", "aliases", "available", "build", "check_image_size", "register", "spec"]
FAMILIES = ("conv_stack", "large_kernel", "light", "patchify", "resblock", "space", "space_to_depth")


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(_load(), name)


@cache
def _load():
    """The registry, filled: importing a family registers its stems, then the named points are registered."""
    registry = import_module(".registry", __name__)
    for family in FAMILIES:
        import_module(f".{family}", __name__)
    import_module(".space_points", __name__).load_installed_points()
    return registry
