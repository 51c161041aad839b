"""What varies: the stem registry and every stem family (one module per family).

    stems.available() -> sorted canonical names (one per distinct network)
    stems.aliases()   -> {alias: canonical name}
    stems.spec(name)  -> StemSpec (family, source, defaults, contract); an alias gives its canonical stem
    stems.build(name, in_channels, out_channels=None, **params) -> nn.Module (contract checked)

A stem is a decorated function (`@register`) in any module of this package: every module is imported when the
registry is first used, so a new family module needs no list to join. The registry, the families (torch, fastai:
seconds) and the named points of the design space (stems/points/*.yaml) load on first use (PEP 562), so that
`stems.base` (the project's error and atomic writes) and every command's `--help` start without them.
"""
import pkgutil
from functools import cache
from importlib import import_module

__all__ = ["StemError", "StemSpec", "aliases", "available", "build", "check_image_size", "register", "spec"]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(_load(), name)


@cache
def _load():
    """The registry, filled: importing a module registers its stems, then the named points are registered."""
    registry = import_module(".registry", __name__)
    for module in pkgutil.iter_modules(__path__):
        if module.name != "__main__":  # the command line, not a family
            import_module(f".{module.name}", __name__)
    import_module(".space_points", __name__).load_installed_points()
    return registry
