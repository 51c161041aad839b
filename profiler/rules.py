"""Per-op FLOP rules: the matmul formulas (torch's, with one correction) and the element-wise rules.

The rules themselves are listed in the package docstring (``profiler``).  This module only
maps one aten op call to a FLOP count; who runs the op (which layer) is the counting engine's job.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import conv_flop_count, flop_registry, shape_wrapper

__all__ = ["MATMUL_FORMULAS", "FLOP_COUNTER_OVERRIDES", "conv_backward_flop", "elementwise_flops"]

aten = torch.ops.aten


# ---------------------------------------------------------------------------------------------
# matmul-like ops


def conv_backward_flop(grad_out_shape: list[int], x_shape: list[int], w_shape: list[int], _bias: Any,
                       _stride: Any, _padding: Any, _dilation: Any, transposed: bool, _output_padding: Any,
                       _groups: int, output_mask: list[bool], out_shape: Any = None, **kwargs: Any) -> int:
    """FLOPs of ``aten.convolution_backward``: forward FLOPs once per gradient asked for.

    Replaces torch's ``conv_backward_flop``, whose weight-gradient term ignores ``groups`` (it
    counts ``conv(x, grad_out)`` with all input channels against all output channels), so a conv
    with G groups is charged G × its forward for the weight gradient: a depthwise conv costs
    (1 + G) × its forward instead of 2×.  Every multiply-add of the forward
    (output element × kernel tap × input channel of its group) appears exactly once in the
    input gradient and once in the weight gradient, whatever the groups, stride or padding.
    The forward's own output is ``grad_out``.
    """
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


# For FlopCounterMode(custom_mapping=...), which applies shape_wrapper itself.
FLOP_COUNTER_OVERRIDES = {aten.convolution_backward: conv_backward_flop}
# torch's formulas by op packet, with the correction above.
MATMUL_FORMULAS = {**flop_registry, **{op: shape_wrapper(f) for op, f in FLOP_COUNTER_OVERRIDES.items()}}


# ---------------------------------------------------------------------------------------------
# element-wise ops

_ZERO_COST = frozenset(
    """detach alias view _unsafe_view reshape _reshape_alias t transpose permute expand squeeze
    unsqueeze flatten unflatten clone copy_ _to_copy to contiguous empty empty_like empty_strided
    new_empty new_empty_strided zeros zeros_like new_zeros ones ones_like new_ones full full_like
    new_full fill_ zero_ cat stack split split_with_sizes chunk unbind slice select narrow
    index_select as_strided as_strided_ constant_pad_nd lift_fresh scalar_tensor resize_ set_
    _local_scalar_dense item is_same_size lift_fresh_copy slice_backward select_backward
    expand_copy view_copy permute_copy t_copy transpose_copy unsqueeze_copy squeeze_copy
    _to_dense detach_ arange rand randn rand_like randn_like bernoulli_ normal_ uniform_
    _has_compatible_shallow_copy_type pixel_shuffle pixel_unshuffle""".split()
)
# activation backward ops that torch does not tag `pointwise` (their forward ops are): 1 per element
_ACTIVATION_BWD = frozenset(
    """leaky_relu_backward hardtanh_backward hardswish_backward hardsigmoid_backward elu_backward
    mish_backward softplus_backward""".split()
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


def _norm_is_training(name: str, args: tuple) -> bool:
    if name in _EVAL_NORMS:
        return False
    idx = _TRAINING_NORMS.get(name)
    return True if idx is None or len(args) <= idx else bool(args[idx])


def elementwise_flops(func: torch._ops.OpOverload, args: tuple, out: Any) -> int | None:
    """FLOPs of one aten op by the element-wise rules; None when no rule covers it."""
    name = func._overloadpacket.__name__
    if name in _ZERO_COST:
        return 0
    if torch.Tag.pointwise in func.tags or name in _ACTIVATION_BWD:
        return _first_numel(out)
    if name in _NORM_FWD:
        return (4 if _norm_is_training(name, args) else 2) * _numel(args[0])
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
