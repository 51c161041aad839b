"""Per-layer cost profile of any ``nn.Module``: FLOPs, bytes and (optionally) measured time.

``profile_model(model, (B, C, H, W))`` returns a :class:`Profile` with one row per leaf module in
execution order (``layers``), the same summed per top-level child (``groups``) and model ``totals``.

Counting rules
--------------
* **Matmul-like ops** (conv, mm, addmm, bmm, attention, and their backward) are counted with the
  formulas of torch's ``FlopCounterMode`` (``torch.utils.flop_counter.flop_registry``);
  ``macs`` = those FLOPs / 2.  Ops the registry lacks are decomposed first, exactly as
  ``FlopCounterMode`` does, so the per-layer sums equal a whole-model ``FlopCounterMode`` count.
* **Element-wise ops** the registry ignores get these FLOPs (``*_ew`` columns; an op moves data
  only → 0):

  ======================================  =============================================
  any ``pointwise``-tagged aten op         1 per output element (relu, add, mul, gelu, ...)
  batch/layer/group norm, forward          4 per element training (stats 2 + scale-shift 2),
                                           2 per element in eval (scale-shift only)
  norm backward                            6 per input element
  max/avg pooling, forward                 output elements × kernel window size
  adaptive pooling / reductions (mean...)  1 per input element
  pooling backward                         1 per grad-input element
  softmax / log_softmax (+ backward)       4 per element
  ======================================  =============================================

  An op with no rule is counted as 0 and named, with its module, in a warning.
* **Forward attribution.**  Each op is charged to the leaf module running it.  Ops a parent module
  runs between its children (e.g. a residual block's ``convpath(x) + idpath(x)``) are charged to
  the next leaf that runs (there: the block's activation, which consumes the sum); ops after the
  last leaf go to the last leaf.  Their backward (a residual add's gradient is a pass-through) is
  not counted.
* **Backward attribution.**  ``FlopCounterMode``'s per-module backward attribution is wrong around
  residual branches, so each leaf's backward is counted in isolation: during the forward, every
  leaf is re-run alone on a detached copy of its input, with ``requires_grad`` set only where the
  original input had it (the first layer's input has none, so its conv computes the weight
  gradient only), and its backward is counted.
* **Bytes** (a lower bound: each tensor touched once): ``bytes_moved`` = inputs + weights + outputs
  of the layer's forward; activations at the dtype they have at run time, weights at ``dtype`` when
  autocast is on, else their own.  ``act_bytes`` = output bytes.  ``intensity`` = forward FLOPs per
  byte moved.
* **Time** (``latency=True``): measured after warm-up under ``torch.profiler``; each leaf's forward
  time is its annotated range (CPU) or the device time of the kernels launched inside it (CUDA);
  backward time is that of the autograd nodes its forward ops created (matched by sequence number).
  Never by synchronising after each module.  Profiled steps alternate with plain ones (no hooks,
  no profiler) that give the end-to-end forward and forward+backward times; per-layer and
  end-to-end figures are medians over `repeats` steps each, reported with the gap (per-layer sum /
  end-to-end - 1).  On CPU each leaf is charged the wall time from the end of the previous leaf to
  the end of its own, so the glue between leaves (container code, residual adds) is counted with
  the next leaf and the leaves cover the whole step.
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import math
import os
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.flop_counter import flop_registry

# kineto (torch.profiler's backend) prints start/stop lines to stderr at its default level; read at first use
os.environ.setdefault("KINETO_LOG_LEVEL", "6")

__all__ = ["Profile", "ProfileError", "profile_model", "count_flops_whole_model"]


class ProfileError(ValueError):
    """A model or request the profiler cannot handle, with one sentence saying why."""


# ---------------------------------------------------------------------------------------------
# element-wise rules

_ZERO_COST = frozenset(
    """detach alias view _unsafe_view reshape _reshape_alias t transpose permute expand squeeze
    unsqueeze flatten unflatten clone copy_ _to_copy to contiguous empty empty_like empty_strided
    new_empty new_empty_strided zeros zeros_like new_zeros ones ones_like new_ones full full_like
    new_full fill_ zero_ cat stack split split_with_sizes chunk unbind slice select narrow
    index_select as_strided as_strided_ constant_pad_nd lift_fresh scalar_tensor resize_ set_
    _local_scalar_dense item is_same_size lift_fresh_copy slice_backward select_backward
    expand_copy view_copy permute_copy t_copy transpose_copy unsqueeze_copy squeeze_copy
    _to_dense detach_ arange rand randn rand_like randn_like bernoulli_ normal_ uniform_
    _has_compatible_shallow_copy_type""".split()
)
_NORM_FWD = frozenset(
    """native_batch_norm _native_batch_norm_legit _native_batch_norm_legit_functional
    _native_batch_norm_legit_no_training cudnn_batch_norm miopen_batch_norm _batch_norm_with_update
    _batch_norm_with_update_functional _batch_norm_no_update native_layer_norm native_group_norm
    _fused_rms_norm""".split()
)
_NORM_BWD = frozenset(
    """native_batch_norm_backward cudnn_batch_norm_backward miopen_batch_norm_backward
    batch_norm_backward native_layer_norm_backward native_group_norm_backward
    _fused_rms_norm_backward""".split()
)
_POOL_FWD = frozenset(
    """max_pool1d max_pool2d max_pool3d max_pool2d_with_indices max_pool3d_with_indices
    avg_pool1d avg_pool2d avg_pool3d mkldnn_max_pool2d mkldnn_max_pool3d""".split()
)
_ADAPTIVE_AND_REDUCE = frozenset(
    """_adaptive_avg_pool2d _adaptive_avg_pool3d adaptive_avg_pool1d adaptive_max_pool1d
    adaptive_max_pool2d adaptive_max_pool3d mean sum amax amin max min var std var_mean norm
    logsumexp prod""".split()
)
_POOL_BWD = frozenset(
    """max_pool2d_with_indices_backward max_pool3d_with_indices_backward avg_pool2d_backward
    avg_pool3d_backward _adaptive_avg_pool2d_backward _adaptive_avg_pool3d_backward
    adaptive_max_pool2d_backward adaptive_max_pool3d_backward""".split()
)
_SOFTMAX = frozenset(
    "_softmax _log_softmax _softmax_backward_data _log_softmax_backward_data".split()
)
_TRAINING_NORMS = {
    # op name -> positional index of its `training` flag (absent: always training)
    "native_batch_norm": 5,
    "_native_batch_norm_legit": 5,
    "_native_batch_norm_legit_functional": 5,
    "cudnn_batch_norm": 5,
    "miopen_batch_norm": 5,
}
_EVAL_NORMS = frozenset({"_native_batch_norm_legit_no_training", "_batch_norm_no_update"})


def _numel(x: Any) -> int:
    return x.numel() if isinstance(x, torch.Tensor) else 0


def _first_numel(tree: Any) -> int:
    leaves, _ = tree_flatten(tree)
    return next((t.numel() for t in leaves if isinstance(t, torch.Tensor)), 0)


def _window(kernel: Any) -> int:
    if isinstance(kernel, int):
        return kernel * kernel
    return math.prod(int(k) for k in kernel)


def elementwise_flops(func: torch._ops.OpOverload, args: tuple, out: Any) -> int | None:
    """FLOPs of one aten op by the module docstring's element-wise rules; None when no rule."""
    name = func._overloadpacket.__name__
    if name in _ZERO_COST or name.endswith("_copy") and name.rstrip("_") in _ZERO_COST:
        return 0
    if torch.Tag.pointwise in func.tags:
        return _first_numel(out)
    if name in _NORM_FWD:
        if name in _EVAL_NORMS:
            training = False
        else:
            idx = _TRAINING_NORMS.get(name)
            training = True if idx is None or len(args) <= idx else bool(args[idx])
        return (4 if training else 2) * _numel(args[0])
    if name in _NORM_BWD:
        return 6 * _numel(args[1])  # args: grad_out, input, ...
    if name in _POOL_FWD:
        kernel = args[1] if len(args) > 1 else 1
        return _first_numel(out) * _window(kernel)
    if name in _ADAPTIVE_AND_REDUCE:
        return _numel(args[0])
    if name in _POOL_BWD:
        return _first_numel(out)
    if name in _SOFTMAX:
        return 4 * _first_numel(out)
    if _first_numel(out) == 0:
        return 0
    return None


# ---------------------------------------------------------------------------------------------
# per-leaf bookkeeping


@dataclass
class _Leaf:
    """Running totals for one leaf module."""

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
    mm_fwd: int = 0  # FlopCounterMode-registry FLOPs
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
        self.current: _Leaf | None = None
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

    def flush_pending(self, leaf: _Leaf) -> None:
        leaf.mm_fwd += self.pending_mm
        leaf.ew_fwd += self.pending_ew
        leaf.unknown |= self.pending_unknown
        self.pending_mm = self.pending_ew = 0
        self.pending_unknown = set()


class _CountMode(TorchDispatchMode):
    """Counts every aten op's FLOPs into a :class:`_Sink` (registry formulas + element-wise rules)."""

    def __init__(self, sink: _Sink) -> None:
        super().__init__()
        self.sink = sink

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if func in _SKIP_OPS or self.sink.phase is None:
            return func(*args, **kwargs)
        packet = func._overloadpacket
        # Same decomposition policy as FlopCounterMode, so our sums match its totals.
        if packet not in flop_registry and func is not torch.ops.prim.device.default:
            with self:
                r = func.decompose(*args, **kwargs)
                if r is not NotImplemented:
                    return r
        out = func(*args, **kwargs)
        if packet in flop_registry:
            self.sink.charge(int(flop_registry[packet](*args, **kwargs, out_val=out)), 0, None)
        else:
            ew = elementwise_flops(func, args, out)
            self.sink.charge(0, ew or 0, None if ew is not None else str(packet))
        return out


# ---------------------------------------------------------------------------------------------
# helpers


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _nbytes(tree: Any) -> int:
    return sum(t.numel() * t.element_size() for t in _tensors(tree))


def _shape_of(tree: Any) -> tuple | None:
    ts = _tensors(tree)
    if not ts:
        return None
    return tuple(ts[0].shape) if len(ts) == 1 else tuple(tuple(t.shape) for t in ts)


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    seen: set[int] = set()
    out = []
    for name, mod in model.named_modules(remove_duplicate=False):
        if next(mod.children(), None) is None and id(mod) not in seen:
            seen.add(id(mod))
            out.append((name, mod))
    return out


def _group_of(name: str, kind: str) -> str:
    return name.split(".", 1)[0] if name else kind


def _param_bytes(mod: nn.Module, dtype: torch.dtype | None) -> int:
    total = 0
    for p in mod.parameters():
        size = torch.empty((), dtype=dtype).element_size() if dtype and p.is_floating_point() else p.element_size()
        total += p.numel() * size
    return total


def _resolve_device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ProfileError(
            f"device={str(device)!r} was asked for, but torch sees no CUDA GPU on this machine "
            f"(torch {torch.__version__}, cuda available: False); use device='cpu'."
        )
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _autocast(dev: torch.device, dtype: torch.dtype | None):
    return torch.autocast(dev.type, dtype=dtype) if dtype is not None else nullcontext()


def _prepare(model: nn.Module, dev: torch.device, channels_last: bool) -> nn.Module:
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
    except Exception:  # un-copyable modules: profile in place, buffers restored by the caller
        if dev.type == "meta":
            raise
        work = model
    work = work.to(dev)
    if channels_last:
        work = work.to(memory_format=torch.channels_last)
    return work


@contextmanager
def _restored_state(model: nn.Module) -> Iterator[None]:
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


def _check_shape(shape: Sequence[int]) -> None:
    try:
        ok = len(shape) > 0 and all(int(s) > 0 and int(s) == s for s in shape)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ProfileError(f"input shape {shape!r} must be a non-empty tuple of positive integers, e.g. (8, 3, 224, 224).")


def _device_of(model: nn.Module) -> torch.device | None:
    t = next(iter([*model.parameters(), *model.buffers()]), None)
    return t.device if t is not None else None


def _make_input(shape: Sequence[int], dev: torch.device, channels_last: bool) -> torch.Tensor:
    x = torch.randn(*[int(s) for s in shape], device=dev)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _grad_outputs(out: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    outs = [t for t in _tensors(out) if t.requires_grad and t.is_floating_point()]
    return outs, [torch.ones_like(t) for t in outs]


def _grad_targets(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


# ---------------------------------------------------------------------------------------------
# counting pass


@dataclass
class _Saved:
    """A leaf's input, copied before the leaf ran, and whether the original needed grad."""

    tensor: torch.Tensor
    needs_grad: bool


class _Hooks:
    """Forward hooks on every leaf: order, shapes, bytes, charging, isolated backward counting."""

    def __init__(self, leaves: list[_Leaf], sink: _Sink, backward: bool, dev: torch.device,
                 dtype: torch.dtype | None) -> None:
        self.leaves, self.sink, self.backward, self.dev, self.dtype = leaves, sink, backward, dev, dtype
        self.busy = False  # set while a leaf is re-run alone, so its hooks stay quiet
        self.saved: Any = None
        self.n_seen = 0
        self.handles: list[Any] = []
        self.last: _Leaf | None = None

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

    def _pre(self, leaf: _Leaf) -> Callable:
        def hook(mod: nn.Module, args: tuple, kwargs: dict) -> None:
            if self.busy:
                return
            phase, self.sink.phase = self.sink.phase, None
            if leaf.order < 0:
                leaf.order = self.n_seen
                self.n_seen += 1
                leaf.in_shape = _shape_of(args)
            leaf.calls += 1
            leaf.in_bytes += _nbytes((args, kwargs))
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

    def _post(self, leaf: _Leaf) -> Callable:
        def hook(mod: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
            if self.busy:
                return
            phase, self.sink.phase = self.sink.phase, None
            if leaf.out_shape is None:
                leaf.out_shape = _shape_of(out)
            leaf.out_bytes += _nbytes(out)
            if self.backward:
                self._count_backward_alone(leaf)
            self.sink.current, self.sink.phase = None, phase

        return hook

    def _count_backward_alone(self, leaf: _Leaf) -> None:
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
            with torch.enable_grad(), _autocast(self.dev, self.dtype):
                out = leaf.module(*args, **kwargs)
            outs, gouts = _grad_outputs(out)
            targets = roots + _grad_targets(leaf.module)
            if outs and targets:
                self.sink.current, self.sink.phase = leaf, "bwd"
                torch.autograd.grad(outs, targets, gouts, allow_unused=True)
        finally:
            self.busy = False
            self.sink.phase = None


def _run_counting(model: nn.Module, x: torch.Tensor, leaves: list[_Leaf], backward: bool,
                  dev: torch.device, dtype: torch.dtype | None) -> None:
    sink = _Sink()
    hooks = _Hooks(leaves, sink, backward, dev, dtype)
    grad_ctx = torch.enable_grad() if backward else torch.no_grad()
    try:
        with hooks, _CountMode(sink), grad_ctx, _autocast(dev, dtype):
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


def _count(model: nn.Module, shape: Sequence[int], dev: torch.device, backward: bool,
           dtype: torch.dtype | None, channels_last: bool) -> tuple[nn.Module, list[_Leaf]]:
    """Count on the meta device when possible (shapes only, no compute), else on `dev`.

    Autocast needs real device tensors, and data-dependent ops fail on meta; both count on `dev`,
    which also reports a failing model with its real error.
    """
    if dtype is None and dev.type != "meta":
        try:
            return _count_on(model, shape, torch.device("meta"), backward, dtype, channels_last)
        except Exception:
            pass
    return _count_on(model, shape, dev, backward, dtype, channels_last)


def _count_on(model: nn.Module, shape: Sequence[int], dev: torch.device, backward: bool,
              dtype: torch.dtype | None, channels_last: bool) -> tuple[nn.Module, list[_Leaf]]:
    work = _prepare(model, dev, channels_last)
    x = _make_input(shape, dev, channels_last)
    leaves = [_Leaf(i, name, mod) for i, (name, mod) in enumerate(_leaves(work))]
    with _restored_state(work):
        _run_counting(work, x, leaves, backward, dev, dtype)
    return work, leaves


def count_flops_whole_model(model: nn.Module, x: torch.Tensor, backward: bool = True) -> tuple[int, int]:
    """Forward and backward FLOPs of the whole model by ``FlopCounterMode`` (registry ops only).

    The reference the per-layer sums are checked against.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fwd, torch.set_grad_enabled(backward):
        out = model(x)
    if not backward:
        return fwd.get_total_flops(), 0
    outs, gouts = _grad_outputs(out)
    with FlopCounterMode(display=False) as bwd:
        torch.autograd.grad(outs, _grad_targets(model), gouts, allow_unused=True)
    return fwd.get_total_flops(), bwd.get_total_flops()



# ---------------------------------------------------------------------------------------------
# timing

_LEAF_TAG = "stemlab.leaf."
_STEP_TAG = "stemlab.step"
_FWD_RANGE = "stemlab.forward"
_BWD_RANGE = "stemlab.backward"
_BWD_TAG = "autograd::engine::evaluate_function: "


@contextmanager
def _num_threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _step(model: nn.Module, x: torch.Tensor, backward: bool, dev: torch.device,
          dtype: torch.dtype | None, annotate: bool = False) -> None:
    """One forward (+ backward into the weights' gradients, as a training step computes them)."""
    from torch.autograd.profiler import record_function

    mark = (lambda name: record_function(name)) if annotate else (lambda name: nullcontext())
    with torch.set_grad_enabled(backward), _autocast(dev, dtype), mark(_FWD_RANGE):
        out = model(x)
    if backward:
        outs, gouts = _grad_outputs(out)
        if outs:
            with mark(_BWD_RANGE):
                torch.autograd.grad(outs, _grad_targets(model), gouts, allow_unused=True)


def _time_e2e(model: nn.Module, x: torch.Tensor, backward: bool, dev: torch.device,
              dtype: torch.dtype | None) -> tuple[float, float]:
    """Wall ms of one step's forward and of the whole step, no hooks or profiler attached."""
    _sync(dev)
    t0 = time.perf_counter()
    with torch.set_grad_enabled(backward), _autocast(dev, dtype):
        out = model(x)
    _sync(dev)
    t1 = time.perf_counter()
    if backward:
        outs, gouts = _grad_outputs(out)
        if outs:
            torch.autograd.grad(outs, _grad_targets(model), gouts, allow_unused=True)
        _sync(dev)
    return (t1 - t0) * 1e3, (time.perf_counter() - t0) * 1e3


class _Switch:
    on = True


@contextmanager
def _annotated(leaves: list[tuple[str, nn.Module]]) -> Iterator[_Switch]:
    """Wrap every leaf's forward in a profiler range named after its index (while switched on)."""
    switch = _Switch()
    open_ranges: dict[int, list[Any]] = {}

    def pre(i: int) -> Callable:
        def hook(mod: nn.Module, args: tuple) -> None:
            if switch.on:
                rf = torch.autograd.profiler.record_function(f"{_LEAF_TAG}{i}")
                rf.__enter__()
                open_ranges.setdefault(i, []).append(rf)

        return hook

    def post(i: int) -> Callable:
        def hook(mod: nn.Module, args: tuple, out: Any) -> None:
            if switch.on and open_ranges.get(i):
                open_ranges[i].pop().__exit__(None, None, None)

        return hook

    handles = []
    for i, (_, mod) in enumerate(leaves):
        handles += [mod.register_forward_pre_hook(pre(i)), mod.register_forward_hook(post(i))]
    try:
        yield switch
    finally:
        for h in handles:
            h.remove()


def _enclosing_leaf(ev: Any) -> int | None:
    while ev is not None:
        if ev.name.startswith(_LEAF_TAG):
            return int(ev.name[len(_LEAF_TAG):])
        ev = ev.cpu_parent
    return None


def _attribute(events: Any, n_leaves: int, cuda: bool) -> tuple[list[float], list[float], float]:
    """Per-leaf forward and backward µs of one profiled step, and the µs no leaf could claim.

    CUDA: a leaf's forward is the device time of the kernels launched inside its range; ops run
    between leaves (a residual add) go to the next leaf.  CPU: a leaf's forward is the wall time
    from the end of the previous leaf to the end of its own range, so the glue between leaves
    (container code, residual adds) is charged to the next leaf like the ops there, and the leaves
    cover the whole forward.  Backward: each autograd node's time (device time; on CPU, wall time
    since the previous node ended) goes to the leaf whose forward op created it (same thread and
    sequence number); nodes without a forward op (AccumulateGrad) are left unattributed.
    """
    fwd, bwd = [0.0] * n_leaves, [0.0] * n_leaves
    spent = (lambda e: e.device_time_total) if cuda else (lambda e: e.cpu_time_total)
    events = sorted(events, key=lambda e: e.time_range.start)
    fwd_range = next(e for e in events if e.name == _FWD_RANGE)
    bwd_range = next((e for e in events if e.name == _BWD_RANGE), None)
    seq_owner: dict[tuple[int, int], int] = {}
    between: list[Any] = []  # top-level forward ops waiting for the next leaf
    lost = 0.0
    last_leaf: int | None = None
    prev_end = fwd_range.time_range.start
    for ev in events:
        if ev.name.startswith("stemlab.") and not ev.name.startswith(_LEAF_TAG):
            continue
        if ev.time_range.start > fwd_range.time_range.end or ev.name.startswith(_BWD_TAG) or _in_backward(ev):
            continue
        leaf = _enclosing_leaf(ev)
        if ev.name.startswith(_LEAF_TAG):
            if ev.cpu_parent is None or _enclosing_leaf(ev.cpu_parent) is None:
                own = spent(ev) + sum(spent(b) for b in between) if cuda else ev.time_range.end - prev_end
                fwd[leaf] += own
                for b in between:
                    _own_seqs(b, leaf, seq_owner)
                between, last_leaf, prev_end = [], leaf, ev.time_range.end
            continue
        if leaf is not None:
            if ev.sequence_nr >= 0:
                seq_owner[(ev.thread, ev.sequence_nr)] = leaf
        elif ev.cpu_parent is None or ev.cpu_parent.name.startswith("stemlab."):
            between.append(ev)
    tail = sum(spent(b) for b in between) if cuda else fwd_range.time_range.end - prev_end
    if last_leaf is None:
        lost += tail
    else:  # after the last leaf (e.g. a functional flatten): the last leaf's
        fwd[last_leaf] += tail
        for b in between:
            _own_seqs(b, last_leaf, seq_owner)
    nodes = [e for e in events if e.name.startswith(_BWD_TAG) and not _in_backward(e.cpu_parent)]
    prev = bwd_range.time_range.start if bwd_range is not None else None
    for ev in nodes:
        if cuda or prev is None or ev.thread != bwd_range.thread:
            t = spent(ev)
        else:
            t, prev = ev.time_range.end - prev, ev.time_range.end
        owner = seq_owner.get((ev.fwd_thread, ev.sequence_nr))
        if owner is None:
            lost += t
        else:
            bwd[owner] += t
    if not cuda and bwd_range is not None and prev is not None:
        lost += max(bwd_range.time_range.end - prev, 0.0)
    return fwd, bwd, lost


def _split_steps(events: Any) -> list[list[Any]]:
    """Events grouped by the step range they start in (backward may run on another thread)."""
    steps = sorted((e for e in events if e.name.startswith(_STEP_TAG + ".")),
                   key=lambda e: e.time_range.start)
    groups: list[list[Any]] = [[] for _ in steps]
    starts = [s.time_range.start for s in steps]
    for ev in events:
        if ev.name.startswith(_STEP_TAG + ".") or ev.device_type != torch.autograd.DeviceType.CPU:
            continue
        k = bisect.bisect_right(starts, ev.time_range.start) - 1
        if k >= 0 and ev.time_range.start <= steps[k].time_range.end:
            groups[k].append(ev)
    return groups


def _in_backward(ev: Any) -> bool:
    while ev is not None:
        if ev.name.startswith(_BWD_TAG):
            return True
        ev = ev.cpu_parent
    return False


def _own_seqs(ev: Any, leaf: int, seq_owner: dict[tuple[int, int], int]) -> None:
    stack = [ev]
    while stack:
        e = stack.pop()
        if e.sequence_nr >= 0:
            seq_owner[(e.thread, e.sequence_nr)] = leaf
        stack.extend(e.cpu_children)


def _measure(model: nn.Module, x: torch.Tensor, backward: bool, dev: torch.device,
             dtype: torch.dtype | None, warmup: int, repeats: int
             ) -> tuple[list[list[float]], list[list[float]], dict[str, float]]:
    """Per-leaf ms (one entry per profiled step) and the end-to-end figures.

    Profiled and plain steps alternate, so both see the same load on a shared machine; each
    profiled step is its own profiler session (cheap once the profiler is initialised).
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    leaves = _leaves(model)
    cuda = dev.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities):  # the first session pays the profiler's start-up
        _step(model, x, backward, dev, dtype)
    for _ in range(max(warmup, 1)):
        _step(model, x, backward, dev, dtype)
    fwd_ms: list[list[float]] = [[] for _ in leaves]
    bwd_ms: list[list[float]] = [[] for _ in leaves]
    e2e_fwd: list[float] = []
    e2e_train: list[float] = []
    lost: list[float] = []
    with _annotated(leaves) as annotate:
        for k in range(2 * repeats):
            if k % 4 in (0, 3):  # plain, profiled, profiled, plain, ...: no order bias
                annotate.on = False
                f, t = _time_e2e(model, x, backward, dev, dtype)
                e2e_fwd.append(f)
                e2e_train.append(t)
                continue
            annotate.on = True
            with profile(activities=activities) as prof:
                with record_function(f"{_STEP_TAG}.{k}"):
                    _step(model, x, backward, dev, dtype, annotate=True)
                    _sync(dev)
            f, b, lo = _attribute(_split_steps(prof.events())[0], len(leaves), cuda)
            for i in range(len(leaves)):
                fwd_ms[i].append(f[i] / 1e3)
                bwd_ms[i].append(b[i] / 1e3)
            lost.append(lo / 1e3)
    if not backward:
        bwd_ms = [[] for _ in leaves]
    totals = {"ms_fwd_e2e": statistics.median(e2e_fwd), "ms_unattributed": statistics.median(lost)}
    if backward:
        totals["ms_train_step_e2e"] = statistics.median(e2e_train)
    return fwd_ms, bwd_ms, totals


# ---------------------------------------------------------------------------------------------
# tables


_SUM_COLS = ["params", "macs", "flops_fwd", "flops_bwd", "flops_fwd_ew", "flops_bwd_ew",
             "act_bytes", "bytes_moved", "ms_fwd", "ms_bwd"]


@dataclass
class Profile:
    """The result of :func:`profile_model`."""

    layers: pd.DataFrame
    groups: pd.DataFrame
    totals: dict[str, float]
    meta: dict[str, Any] = field(default_factory=dict)


def _layers_frame(model: nn.Module, leaves: list[_Leaf]) -> pd.DataFrame:
    ran = sorted((lf for lf in leaves if lf.calls > 0), key=lambda lf: lf.order)
    # Leaves that never ran but own weights still count towards params (sums = model totals).
    idle = [lf for lf in leaves if lf.calls == 0 and any(True for _ in lf.module.parameters())]
    rows = []
    for lf in ran + idle:
        kind = type(lf.module).__name__
        rows.append(
            {
                "name": lf.name,
                "kind": kind,
                "group": _group_of(lf.name, kind),
                "calls": lf.calls,
                "in_shape": lf.in_shape,
                "out_shape": lf.out_shape,
                "params": sum(p.numel() for p in lf.module.parameters()),
                "macs": lf.mm_fwd // 2,
                "flops_fwd": lf.mm_fwd + lf.ew_fwd,
                "flops_bwd": lf.mm_bwd + lf.ew_bwd,
                "flops_fwd_ew": lf.ew_fwd,
                "flops_bwd_ew": lf.ew_bwd,
                "act_bytes": lf.out_bytes,
                "bytes_moved": lf.in_bytes + lf.param_bytes + lf.out_bytes,
                "ms_fwd": statistics.median(lf.ms_fwd) if lf.ms_fwd else math.nan,
                "ms_bwd": statistics.median(lf.ms_bwd) if lf.ms_bwd else math.nan,
            }
        )
    df = pd.DataFrame(rows)
    return _derive(df)


def _share(col: pd.Series) -> pd.Series:
    total = col.sum(min_count=1)
    return col / total if total and not math.isnan(total) else col * math.nan


def _derive(df: pd.DataFrame) -> pd.DataFrame:
    """Ratio columns, recomputed from the summed ones (so they are right for groups too)."""
    df["flops_train"] = df["flops_fwd"] + df["flops_bwd"]
    df["ms_train"] = df["ms_fwd"] + df["ms_bwd"]
    df["intensity"] = df["flops_fwd"] / df["bytes_moved"].where(df["bytes_moved"] > 0)
    return df


def _add_shares(df: pd.DataFrame, mask: pd.Series | None = None) -> pd.DataFrame:
    part = df if mask is None else df[mask]
    for col, src in [("share_flops", "flops_fwd"), ("share_time", "ms_fwd"),
                     ("share_flops_train", "flops_train"), ("share_time_train", "ms_train")]:
        df[col] = df[src] / part[src].sum(min_count=1) if part[src].notna().any() else math.nan
    return df


def _add_roofline(df: pd.DataFrame, peak: Any) -> pd.DataFrame:
    """Achieved throughput of each forward and its roofline bound against the device's peaks."""
    if peak is None:
        return df
    sec = df["ms_fwd"].where(df["ms_fwd"] > 0) / 1e3
    df["tflops"] = df["flops_fwd"] / sec / 1e12
    df["gbps"] = df["bytes_moved"] / sec / 1e9
    bound_s = pd.concat([df["flops_fwd"] / peak.flops_per_s, df["bytes_moved"] / peak.bytes_per_s], axis=1).max(axis=1)
    df["roofline_ms"] = bound_s * 1e3
    df["efficiency"] = df["roofline_ms"] / df["ms_fwd"].where(df["ms_fwd"] > 0)
    return df


def _groups_frame(layers: pd.DataFrame) -> pd.DataFrame:
    order = list(dict.fromkeys(layers["group"]))
    g = layers.groupby("group", sort=False)[_SUM_COLS].sum(min_count=1).reindex(order)
    g.loc["total"] = layers[_SUM_COLS].sum(min_count=1)
    g = g.reset_index().rename(columns={"index": "group"})
    g = _derive(g)
    return _add_shares(g, g["group"] != "total")


def _totals(model: nn.Module, layers: pd.DataFrame, groups: pd.DataFrame) -> dict[str, float]:
    tot = groups.set_index("group").loc["total"]
    out: dict[str, float] = {
        "params": float(sum(p.numel() for p in model.parameters())),
        **{k: float(tot[k]) for k in ["macs", "flops_fwd", "flops_bwd", "act_bytes", "bytes_moved", "ms_fwd", "ms_bwd"]},
        "ms_fwd_e2e": math.nan,
        "ms_train_step_e2e": math.nan,
        "gap_fwd": math.nan,
        "gap_train": math.nan,
    }
    stem = groups.set_index("group")
    has_stem = "stem" in stem.index
    for key, col in [("stem_share_flops", "share_flops"), ("stem_share_time", "share_time"),
                     ("stem_share_flops_train", "share_flops_train"), ("stem_share_time_train", "share_time_train")]:
        out[key] = float(stem.loc["stem", col]) if has_stem else math.nan
    return out


def _warn_unknown(leaves: list[_Leaf]) -> list[str]:
    msgs = [
        f"{lf.name or '<model>'} ({type(lf.module).__name__}): {', '.join(sorted(lf.unknown))}"
        for lf in leaves if lf.unknown
    ]
    if msgs:
        warnings.warn(
            "analyze.profile: no FLOP rule for these ops, counted as 0: " + "; ".join(msgs),
            stacklevel=3,
        )
    return msgs


# ---------------------------------------------------------------------------------------------
# entry point


def profile_model(
    model: nn.Module,
    input_shape: Sequence[int],
    device: str | torch.device = "cpu",
    latency: bool = True,
    backward: bool = True,
    dtype: torch.dtype | None = None,
    channels_last: bool = False,
    warmup: int = 1,
    repeats: int = 5,
    threads: int | None = None,
    roofline: bool = True,
) -> Profile:
    """Profile `model` on a random input of `input_shape` (see the module docstring for the rules).

    The model is profiled on a private copy moved to `device` (in its current train/eval mode),
    so its weights, BN statistics and gradients are left as they were.  `dtype` turns on autocast
    (e.g. ``torch.bfloat16``).  With ``latency=False`` only counts are made (fast; time columns NaN).
    `warmup` untimed steps, then `repeats` profiled steps (per-layer medians) and as many
    end-to-end ones, alternating (medians are reported).  `threads` sets torch's CPU threads while timing (1 gives steady CPU
    figures on a machine shared with other work); None keeps the current setting.
    With latency and `roofline`, the device's achieved peaks (``analyze.calibrate``, cached) give
    the columns ``tflops, gbps, roofline_ms, efficiency``.
    """
    if not isinstance(model, nn.Module):
        raise ProfileError(f"profile_model needs an nn.Module, got {type(model).__name__}.")
    dev = _resolve_device(device)
    _check_shape(input_shape)
    meta: dict[str, Any] = {"device": str(dev), "input_shape": tuple(int(s) for s in input_shape),
                            "dtype": str(dtype) if dtype else None, "channels_last": channels_last,
                            "training": model.training, "threads": threads or torch.get_num_threads()}
    work, leaves = _count(model, input_shape, dev, backward, dtype, channels_last)
    timing: dict[str, float] = {}
    if latency:
        if _device_of(work) != dev:
            work = _prepare(model, dev, channels_last)
        x = _make_input(input_shape, dev, channels_last)
        with _restored_state(work), _num_threads(threads):
            fwd_ms, bwd_ms, timing = _measure(work, x, backward, dev, dtype, warmup, repeats)
        for lf in leaves:
            lf.ms_fwd, lf.ms_bwd = fwd_ms[lf.index], bwd_ms[lf.index]
    peak = None
    if latency and roofline:
        from analyze.calibrate import peaks

        with _num_threads(threads):
            peak = peaks(dev, dtype)
        meta["peaks"] = dataclasses.asdict(peak)
    meta["unknown_ops"] = _warn_unknown(leaves)
    layers = _add_roofline(_add_shares(_layers_frame(work, leaves)), peak)
    groups = _add_roofline(_groups_frame(layers), peak)
    totals = _totals(work, layers, groups)
    totals.update(timing)
    if peak is not None:
        totals["peak_tflops"] = peak.flops_per_s / 1e12
        totals["peak_gbps"] = peak.bytes_per_s / 1e9
    if latency:
        totals["gap_fwd"] = totals["ms_fwd"] / totals["ms_fwd_e2e"] - 1
        if backward:
            totals["gap_train"] = (totals["ms_fwd"] + totals["ms_bwd"]) / totals["ms_train_step_e2e"] - 1
    return Profile(layers=layers, groups=groups, totals=totals, meta=meta)
