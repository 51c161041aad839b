"""Per-layer cost profile of any ``nn.Module``: FLOPs, bytes and measured time.

``profile_model(model, (B, C, H, W))`` returns a :class:`Profile` with one row per leaf module in
execution order (``layers``), the same summed per top-level child (``groups``) and model ``totals``.

Modules, one role each (imports point down this list; nothing of the project but ``stems``):
``rules`` (per-op FLOP rules) → ``runtime`` (model copy, inputs, devices) → ``counting`` (the
counting engine) → ``timing`` (torch.profiler attribution) → ``calibrate`` (device peaks) →
``tables`` (the Profile frames) → this facade; ``plots`` draws a Profile.

Counting rules
--------------
* **Matmul-like ops** (conv, mm, addmm, bmm, attention, and their backward) are counted with the
  formulas of torch's ``FlopCounterMode`` (``torch.utils.flop_counter.flop_registry``), except
  ``convolution_backward``: torch's weight-gradient term ignores ``groups`` (a depthwise conv is
  charged (1 + groups) × its forward), so here each gradient asked for costs the forward's FLOPs:
  2× forward, or 1× for a first layer whose input needs no gradient (``rules.conv_backward_flop``).
  ``macs`` = those FLOPs / 2.  Ops the registry lacks are decomposed first, exactly as
  ``FlopCounterMode`` does, so the per-layer sums equal a whole-model ``FlopCounterMode`` count
  made with the same correction (``count_flops_whole_model``).
* **Element-wise ops** the registry ignores get these FLOPs (``*_ew`` columns; an op moves data
  only → 0):

  ======================================  =============================================
  any ``pointwise``-tagged aten op         1 per output element (relu, add, mul, gelu, ...)
  activation backward (leaky_relu, ...)    1 per output element
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
  autocast is on, else their own.  ``bytes_bwd``: the leaf's isolated backward reads the gradient
  of its outputs, its inputs and its weights, and writes the gradients it computes (inputs that
  need one, weights).  ``act_bytes`` = output bytes.  ``intensity`` = forward FLOPs per
  byte moved.
* **Time** (``latency=True``): measured after warm-up under ``torch.profiler``; each leaf's forward
  time is its annotated range (CPU) or the device time of the kernels launched inside it (CUDA);
  backward time is that of the autograd nodes its forward ops created (matched by sequence number).
  Never by synchronising after each module.  Profiled steps alternate with plain ones (no hooks,
  no profiler) that give the end-to-end forward and forward+backward times; per-layer and
  end-to-end figures are medians over the steps taken (per layer also the quartiles,
  ``ms_fwd_q1``/``ms_fwd_q3``, ``ms_bwd_q1``/``ms_bwd_q3``) (at least 2 profiled and 2 plain, at most
  `repeats` each, fewer once `budget_s` is spent), reported with the gap
  (per-layer sum / end-to-end - 1).  On CPU each leaf is charged the wall time from the end of the
  previous leaf to the end of its own, so the glue between leaves (container code, residual adds)
  is counted with the next leaf and the leaves cover the whole step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .calibrate import peaks
from .counting import count, count_flops_whole_model, warn_unknown_ops
from .runtime import (
    ProfileError,
    check_shape,
    device_of,
    make_input,
    num_threads,
    prepare,
    resolve_device,
    restored_state,
)
from .tables import Profile, build_tables
from .timing import measure

__all__ = ["COUNTING", "Profile", "ProfileError", "profile_model", "count_flops_whole_model"]


COUNTING = "counting FLOPs and bytes per layer"  # the start of the progress line said before the count


def _quiet(message: str) -> None:
    """The default progress callback: says nothing."""


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
    budget_s: float | None = None,
    threads: int | None = None,
    roofline: bool = True,
    progress: Callable[[str], None] = _quiet,
) -> Profile:
    """Profile `model` on a random input of `input_shape` (see the module docstring for the rules).

    The model is profiled on a private copy moved to `device` (in its current train/eval mode),
    so its weights, BN statistics and gradients are left as they were.  `dtype` turns on autocast
    (e.g. ``torch.bfloat16``).  With ``latency=False`` only counts are made (fast; time columns NaN).
    Timing: `warmup` untimed steps (the first also starts the profiler up), then profiled and
    end-to-end steps alternating, `repeats` of each at most; once `budget_s` seconds of timing are
    spent (None: no limit) it stops at 2 of each.  `threads` sets torch's CPU threads while timing
    (1 gives steady CPU figures on a machine shared with other work); None keeps the current
    setting.  With latency and `roofline`, the device's achieved peaks (``calibrate.peaks``,
    cached) give the columns
    ``tflops, gbps, roofline_ms, efficiency``.  `progress` receives one line per stage.
    """
    if not isinstance(model, nn.Module):
        raise ProfileError(f"profile_model needs an nn.Module, got {type(model).__name__}.")
    dev = resolve_device(device)
    check_shape(input_shape)
    meta: dict[str, Any] = {"device": str(dev), "input_shape": tuple(int(s) for s in input_shape),
                            "dtype": str(dtype) if dtype else None, "channels_last": channels_last,
                            "training": model.training, "threads": threads or torch.get_num_threads()}
    progress(f"{COUNTING} (input {meta['input_shape']}): one forward and backward pass outside any timing; the first "
             "pass at a new shape also builds the device's kernels, seconds for a small model, minutes for a large "
             "one on a CPU")
    work, leaves = count(model, input_shape, dev, backward, dtype, channels_last)
    timing: dict[str, float] = {}
    peak = None
    if latency:
        if device_of(work) != dev:
            work = prepare(model, dev, channels_last)
        x = make_input(input_shape, dev, channels_last)
        with restored_state(work), num_threads(threads):
            fwd_ms, bwd_ms, timing = measure(work, x, backward, dev, dtype, warmup, repeats, budget_s, progress)
        for lf in leaves:
            lf.ms_fwd, lf.ms_bwd = fwd_ms[lf.index], bwd_ms[lf.index]
        if roofline:
            with num_threads(threads):
                peak = peaks(dev, dtype, say=progress)
            meta["peaks"] = dataclasses.asdict(peak)
    meta["unknown_ops"] = warn_unknown_ops(leaves)
    return build_tables(work, leaves, timing, peak, meta)
