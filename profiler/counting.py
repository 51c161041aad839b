"""The counting engine: every aten op of one forward, and of each leaf's isolated backward, charged
to a leaf module by the rules of :mod:`profiler.rules` (attribution rules: package docstring).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import FlopCounterMode

from .rules import FLOP_COUNTER_OVERRIDES, MATMUL_FORMULAS, elementwise_flops
from .runtime import (
    ProfileError,
    autocast,
    grad_outputs,
    grad_targets,
    leaf_modules,
    make_input,
    nbytes,
    prepare,
    restored_state,
    shape_of,
)

__all__ = ["LeafCount", "count", "count_flops_whole_model", "warn_unknown_ops"]


@dataclass
class LeafCount:
    """Running totals for one leaf module (and, once timed, its per-step ms)."""

    index: int
    name: str
    module: nn.Module
    calls: int = 0
    order: int = -1  # position in execution order (first call)
    in_shape: tuple | None = None
    out_shape: tuple | None = None
    in_bytes: int = 0
    out_bytes: int = 0
    param_bytes: int = 0
    bwd_bytes: int = 0  # the isolated backward's reads and writes (package docstring, Bytes)
    mm_fwd: int = 0  # matmul-formula FLOPs
    ew_fwd: int = 0  # element-wise rule FLOPs
    mm_bwd: int = 0
    ew_bwd: int = 0
    unknown: set[str] = field(default_factory=set)
    ms_fwd: list[float] = field(default_factory=list)
    ms_bwd: list[float] = field(default_factory=list)


_SKIP_OPS = frozenset(
    {
        torch.ops.aten.sym_is_contiguous.default,
        torch.ops.aten.is_contiguous.default,
        torch.ops.aten.is_contiguous.memory_format,
        torch.ops.aten.is_strides_like_format.default,
        torch.ops.aten.is_non_overlapping_and_dense.default,
        torch.ops.aten.size.default,
        torch.ops.aten.sym_size.default,
        torch.ops.aten.stride.default,
        torch.ops.aten.sym_stride.default,
        torch.ops.aten.storage_offset.default,
        torch.ops.aten.sym_storage_offset.default,
        torch.ops.aten.numel.default,
        torch.ops.aten.sym_numel.default,
        torch.ops.aten.dim.default,
        torch.ops.prim.layout.default,
    }
)


class _Sink:
    """Where counted ops go: the running leaf, or a pending bucket for ops between leaves."""

    def __init__(self) -> None:
        self.current: LeafCount | None = None
        self.phase: str | None = None  # "fwd" | "bwd" | None (not counting)
        self.pending_mm = 0
        self.pending_ew = 0
        self.pending_unknown: set[str] = set()

    def charge(self, mm: int, ew: int, unknown: str | None) -> None:
        leaf = self.current
        if leaf is None:
            if self.phase == "fwd":  # between leaves: kept for the next leaf
                self.pending_mm += mm
                self.pending_ew += ew
                if unknown:
                    self.pending_unknown.add(unknown)
            return
        if self.phase == "fwd":
            leaf.mm_fwd += mm
            leaf.ew_fwd += ew
        else:
            leaf.mm_bwd += mm
            leaf.ew_bwd += ew
        if unknown:
            leaf.unknown.add(unknown)

    def flush_pending(self, leaf: LeafCount) -> None:
        leaf.mm_fwd += self.pending_mm
        leaf.ew_fwd += self.pending_ew
        leaf.unknown |= self.pending_unknown
        self.pending_mm = self.pending_ew = 0
        self.pending_unknown = set()


class _CountMode(TorchDispatchMode):
    """Counts every aten op's FLOPs into a :class:`_Sink` (matmul formulas + element-wise rules)."""

    def __init__(self, sink: _Sink) -> None:
        super().__init__()
        self.sink = sink

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if func in _SKIP_OPS or self.sink.phase is None:
            return func(*args, **kwargs)
        packet = func._overloadpacket
        # Same decomposition policy as FlopCounterMode, so our sums match its totals.
        if packet not in MATMUL_FORMULAS and func is not torch.ops.prim.device.default:
            with self:
                r = func.decompose(*args, **kwargs)
                if r is not NotImplemented:
                    return r
        out = func(*args, **kwargs)
        if packet in MATMUL_FORMULAS:
            self.sink.charge(int(MATMUL_FORMULAS[packet](*args, **kwargs, out_val=out)), 0, None)
        else:
            ew = elementwise_flops(func, args, out)
            self.sink.charge(0, ew or 0, None if ew is not None else str(packet))
        return out


def _param_bytes(mod: nn.Module, dtype: torch.dtype | None) -> int:
    total = 0
    for p in mod.parameters():
        size = torch.empty((), dtype=dtype).element_size() if dtype and p.is_floating_point() else p.element_size()
        total += p.numel() * size
    return total


@dataclass
class _Saved:
    """A leaf's input, copied before the leaf ran, and whether the original needed grad."""

    tensor: torch.Tensor
    needs_grad: bool


class _Hooks:
    """Forward hooks on every leaf: order, shapes, bytes, charging, isolated backward counting."""

    def __init__(self, leaves: list[LeafCount], sink: _Sink, backward: bool, dev: torch.device,
                 dtype: torch.dtype | None) -> None:
        self.leaves, self.sink, self.backward, self.dev, self.dtype = leaves, sink, backward, dev, dtype
        self.busy = False  # set while a leaf is re-run alone, so its hooks stay quiet
        self.saved: Any = None
        self.n_seen = 0
        self.handles: list[Any] = []
        self.last: LeafCount | None = None

    def __enter__(self) -> _Hooks:
        for leaf in self.leaves:
            self.handles.append(leaf.module.register_forward_pre_hook(self._pre(leaf), with_kwargs=True))
            self.handles.append(leaf.module.register_forward_hook(self._post(leaf), with_kwargs=True))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()
        if self.last is not None and not exc[0]:
            self.sink.flush_pending(self.last)

    def _pre(self, leaf: LeafCount) -> Callable:
        def hook(mod: nn.Module, args: tuple, kwargs: dict) -> None:
            if self.busy:
                return
            phase, self.sink.phase = self.sink.phase, None
            if leaf.order < 0:
                leaf.order = self.n_seen
                self.n_seen += 1
                leaf.in_shape = shape_of(args)
            leaf.calls += 1
            leaf.in_bytes += nbytes((args, kwargs))
            leaf.param_bytes += _param_bytes(mod, self.dtype)
            self.sink.flush_pending(leaf)
            if self.backward:  # copy now: an in-place layer would overwrite its input
                self.saved = tree_map(
                    lambda t: _Saved(t.detach().clone(), t.requires_grad) if isinstance(t, torch.Tensor) else t,
                    (args, kwargs),
                )
            self.sink.current, self.sink.phase = leaf, phase
            self.last = leaf

        return hook

    def _post(self, leaf: LeafCount) -> Callable:
        def hook(mod: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
            if self.busy:
                return
            phase, self.sink.phase = self.sink.phase, None
            if leaf.out_shape is None:
                leaf.out_shape = shape_of(out)
            leaf.out_bytes += nbytes(out)
            if self.backward:
                self._count_backward_alone(leaf)
            self.sink.current, self.sink.phase = None, phase

        return hook

    def _count_backward_alone(self, leaf: LeafCount) -> None:
        saved, self.saved = self.saved, None
        roots: list[torch.Tensor] = []

        def revive(x: Any) -> Any:
            if not isinstance(x, _Saved):
                return x
            if not x.needs_grad:
                return x.tensor
            root = x.tensor.requires_grad_(True)
            roots.append(root)
            return root.clone()  # not a leaf, so in-place layers may write to it

        args, kwargs = tree_map(revive, saved, is_leaf=lambda x: isinstance(x, _Saved))
        self.busy = True
        try:
            with torch.enable_grad(), autocast(self.dev, self.dtype):
                out = leaf.module(*args, **kwargs)
            outs, gouts = grad_outputs(out)
            targets = roots + grad_targets(leaf.module)
            if outs and targets:
                self.sink.current, self.sink.phase = leaf, "bwd"
                grads = torch.autograd.grad(outs, targets, gouts, allow_unused=True)
                leaf.bwd_bytes += (nbytes(gouts) + nbytes((args, kwargs)) + _param_bytes(leaf.module, self.dtype)
                                   + nbytes([g for g in grads if g is not None]))
        finally:
            self.busy = False
            self.sink.phase = None


def _run_counting(model: nn.Module, x: torch.Tensor, leaves: list[LeafCount], backward: bool,
                  dev: torch.device, dtype: torch.dtype | None) -> None:
    sink = _Sink()
    hooks = _Hooks(leaves, sink, backward, dev, dtype)
    grad_ctx = torch.enable_grad() if backward else torch.no_grad()
    try:
        with hooks, _CountMode(sink), grad_ctx, autocast(dev, dtype):
            sink.phase = "fwd"
            model(x)
            sink.phase = None
    except ProfileError:
        raise
    except Exception as e:
        where = sink.current or hooks.last
        at = f"layer {where.name!r} ({type(where.module).__name__})" if where else "the model's first operation"
        raise ProfileError(
            f"the model failed on input shape {tuple(x.shape)} at {at}: {type(e).__name__}: {e}"
        ) from e


def _count_on(model: nn.Module, shape: Sequence[int], dev: torch.device, backward: bool,
              dtype: torch.dtype | None, channels_last: bool) -> tuple[nn.Module, list[LeafCount]]:
    work = prepare(model, dev, channels_last)
    x = make_input(shape, dev, channels_last)
    leaves = [LeafCount(i, name, mod) for i, (name, mod) in enumerate(leaf_modules(work))]
    with restored_state(work):
        _run_counting(work, x, leaves, backward, dev, dtype)
    return work, leaves


def count(model: nn.Module, shape: Sequence[int], dev: torch.device, backward: bool,
          dtype: torch.dtype | None, channels_last: bool) -> tuple[nn.Module, list[LeafCount]]:
    """The counted copy of `model` and its leaves' counts.

    Counts on the meta device when possible (shapes only, no compute), else on `dev`: autocast
    needs real device tensors, and data-dependent ops fail on meta; both count on `dev`, which
    also reports a failing model with its real error.
    """
    if dtype is None and dev.type != "meta":
        try:
            return _count_on(model, shape, torch.device("meta"), backward, dtype, channels_last)
        except Exception:
            pass
    return _count_on(model, shape, dev, backward, dtype, channels_last)


def count_flops_whole_model(model: nn.Module, x: torch.Tensor, backward: bool = True) -> tuple[int, int]:
    """Forward and backward FLOPs of the whole model by ``FlopCounterMode`` (matmul formulas only,
    with the same grouped-conv backward correction as the per-layer count).

    The reference the per-layer sums are checked against.
    """
    def counter() -> FlopCounterMode:
        return FlopCounterMode(display=False, custom_mapping=FLOP_COUNTER_OVERRIDES)

    with counter() as fwd, torch.set_grad_enabled(backward):
        out = model(x)
    if not backward:
        return fwd.get_total_flops(), 0
    outs, gouts = grad_outputs(out)
    with counter() as bwd:
        torch.autograd.grad(outs, grad_targets(model), gouts, allow_unused=True)
    return fwd.get_total_flops(), bwd.get_total_flops()


def warn_unknown_ops(leaves: list[LeafCount]) -> list[str]:
    """One warning naming every op counted as 0 for lack of a rule, with its layer; the names."""
    msgs = [
        f"{lf.name or '<model>'} ({type(lf.module).__name__}): {', '.join(sorted(lf.unknown))}"
        for lf in leaves if lf.unknown
    ]
    if msgs:
        warnings.warn("profiler: no FLOP rule for these ops, counted as 0: " + "; ".join(msgs), stacklevel=3)
    return msgs
