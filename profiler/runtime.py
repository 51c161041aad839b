"""What counting and timing share: the error, the private model copy, inputs, gradients, devices."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from stems.base import StemlabError

__all__ = ["ProfileError"]


class ProfileError(StemlabError):
    """A model or request the profiler cannot handle, with one sentence saying why."""


def tensors(tree: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def nbytes(tree: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors(tree))


def shape_of(tree: Any) -> tuple | None:
    ts = tensors(tree)
    if not ts:
        return None
    return tuple(ts[0].shape) if len(ts) == 1 else tuple(tuple(t.shape) for t in ts)


def leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every leaf module, once each, in registration order."""
    seen: set[int] = set()
    out = []
    for name, mod in model.named_modules(remove_duplicate=False):
        if next(mod.children(), None) is None and id(mod) not in seen:
            seen.add(id(mod))
            out.append((name, mod))
    return out


def resolve_device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ProfileError(
            f"device={str(device)!r} was asked for, but torch sees no CUDA GPU on this machine "
            f"(torch {torch.__version__}, cuda available: False); use device='cpu'."
        )
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def check_shape(shape: Sequence[int]) -> None:
    try:
        ok = len(shape) > 0 and all(int(s) > 0 and int(s) == s for s in shape)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ProfileError(f"input shape {shape!r} must be a non-empty tuple of positive integers, e.g. (8, 3, 224, 224).")


# a run's train.precision -> the autocast dtype of its steps (fp32: no autocast)
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(dev: torch.device, dtype: torch.dtype | None):
    return torch.autocast(dev.type, dtype=dtype) if dtype is not None else nullcontext()


def prepare(model: nn.Module, dev: torch.device, channels_last: bool) -> nn.Module:
    """A private copy on `dev`, so profiling never changes the caller's weights, stats or grads.

    On the meta device no weights are copied: counts need shapes only, so they cost no compute.
    """
    memo: dict[int, Any] = {}
    if dev.type == "meta":
        for t in [*model.parameters(), *model.buffers()]:
            meta = t.detach().to("meta")
            memo[id(t)] = nn.Parameter(meta, t.requires_grad) if isinstance(t, nn.Parameter) else meta
    try:
        work = copy.deepcopy(model, memo)
    except Exception:  # un-copyable modules: profile in place, buffers restored by restored_state
        if dev.type == "meta":
            raise
        work = model
    work = work.to(dev)
    if channels_last:
        work = work.to(memory_format=torch.channels_last)
    return work


def device_of(model: nn.Module) -> torch.device | None:
    t = next(iter([*model.parameters(), *model.buffers()]), None)
    return t.device if t is not None else None


@contextmanager
def restored_state(model: nn.Module) -> Iterator[None]:
    """Buffers (BN statistics) and gradients as they were before the block ran."""
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    grads = {id(p): p.grad for p in model.parameters()}
    try:
        yield
    finally:
        with torch.no_grad():
            for k, v in model.named_buffers():
                if k in buffers:
                    v.copy_(buffers[k])
        for p in model.parameters():
            p.grad = grads.get(id(p))


def make_input(shape: Sequence[int], dev: torch.device, channels_last: bool) -> torch.Tensor:
    x = torch.randn(*[int(s) for s in shape], device=dev)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def grad_outputs(out: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The differentiable outputs and a gradient of ones for each (what backward starts from)."""
    outs = [t for t in tensors(out) if t.requires_grad and t.is_floating_point()]
    return outs, [torch.ones_like(t) for t in outs]


def grad_targets(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


@contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """torch's CPU threads set to `n` inside the block (None: unchanged)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
