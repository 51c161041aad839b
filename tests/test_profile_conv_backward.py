"""Backward FLOPs of grouped, depthwise and transposed convolutions, against hand-written counts.

Every multiply-add of a conv's forward appears once in the input gradient and once in the weight
gradient, whatever `groups` is; so backward = 2 × forward, or 1 × for a first layer (its input
needs no gradient).  torch's own formula charges a conv with G groups (1 + G) × its forward.
"""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
from torch import nn

import stems
from profiler import count_flops_whole_model, profile_model
from experiments.model import build_model
from experiments.schema import TRUNKS, stem_node


def _conv_rows(p):
    """(forward, backward) matmul FLOPs per conv row: bias gradients are element-wise sums, left out."""
    rows = p.layers[p.layers.kind.str.startswith("Conv")].set_index("name")
    return rows.flops_fwd - rows.flops_fwd_ew, rows.flops_bwd - rows.flops_bwd_ew


def _after_a_first_layer(conv: nn.Module, c_in: int) -> nn.Sequential:
    """`conv` behind a 1×1 conv, so that its input needs a gradient like any inner layer's."""
    return nn.Sequential(nn.Conv2d(c_in, c_in, 1, bias=False), conv)


def test_depthwise_conv_backward_is_twice_forward():
    B, C, H, W, s = 2, 8, 16, 16, 2
    model = _after_a_first_layer(nn.Conv2d(C, C, 3, stride=s, padding=1, groups=C, bias=False), C)
    fwd, bwd = _conv_rows(profile_model(model, (B, C, H, W), latency=False))
    macs = B * C * (H // s) * (W // s) * 9  # 9,216: one 3×3 window per output element, one channel each
    assert fwd["1"] == 2 * macs
    assert bwd["1"] == 2 * 2 * macs  # grad-input + grad-weight, each = forward


def test_grouped_conv_backward_is_twice_forward():
    B, C_in, C_out, H, W, g = 2, 16, 32, 8, 8, 4
    model = _after_a_first_layer(nn.Conv2d(C_in, C_out, 3, padding=1, groups=g, bias=False), C_in)
    fwd, bwd = _conv_rows(profile_model(model, (B, C_in, H, W), latency=False))
    macs = B * C_out * H * W * (C_in // g) * 9  # 147,456: each output sees the 4 input channels of its group
    assert fwd["1"] == 2 * macs
    assert bwd["1"] == 2 * 2 * macs


def test_first_layer_depthwise_conv_backward_is_weight_gradient_only():
    B, C, H, W = 2, 8, 10, 10
    model = nn.Sequential(nn.Conv2d(C, C, 3, padding=1, groups=C, bias=False))
    fwd, bwd = _conv_rows(profile_model(model, (B, C, H, W), latency=False))
    macs = B * C * H * W * 9  # 14,400
    assert fwd["0"] == 2 * macs
    assert bwd["0"] == 2 * macs  # the input needs no gradient: 1× forward


def test_grouped_transposed_conv_backward_is_twice_forward():
    B, C_in, C_out, H, W, g = 2, 8, 16, 6, 6, 4
    model = _after_a_first_layer(nn.ConvTranspose2d(C_in, C_out, 2, stride=2, groups=g, bias=False), C_in)
    fwd, bwd = _conv_rows(profile_model(model, (B, C_in, H, W), latency=False))
    macs = B * C_in * H * W * 2 * 2 * (C_out // g)  # 4,608: each input element spreads over 2×2 taps, 4 outputs
    assert fwd["1"] == 2 * macs
    assert bwd["1"] == 2 * 2 * macs


def test_whole_model_count_uses_the_same_rule():
    B, C, H, W = 2, 8, 12, 12
    model = nn.Sequential(nn.Conv2d(C, C, 3, padding=1, groups=C, bias=False),  # first: 1×
                          nn.Conv2d(C, C, 3, padding=1, groups=C, bias=False))  # inner: 2×
    macs = B * C * H * W * 9  # 20,736 per conv
    fwd, bwd = count_flops_whole_model(model, torch.randn(B, C, H, W))
    assert fwd == 2 * (2 * macs)
    assert bwd == 2 * macs + 2 * 2 * macs


def test_dw_separable_stem_by_hand():
    # The figures: input 2×3×128×128 (e.g. `python -m analyze profile stem=dw_separable
    # data=synthetic data.image_size=128 profile.batch_size=2`).  widths (32, 64, 64):
    # 3×3 s2 conv 3→32 → 64×64; dw 3×3 (32) + pw 32→64; dw 3×3 s2 (64) → 32×32 + pw 64→64.
    B = 2
    macs = {
        "stem.0.0": B * 64 * 64 * 32 * 3 * 9,  # 7,077,888
        "stem.1.0": B * 64 * 64 * 32 * 9,  # 2,359,296 (depthwise)
        "stem.2.0": B * 64 * 64 * 64 * 32,  # 16,777,216
        "stem.3.0": B * 32 * 32 * 64 * 9,  # 1,179,648 (depthwise, stride 2)
        "stem.4.0": B * 32 * 32 * 64 * 64,  # 8,388,608
    }
    trunk = asdict(TRUNKS[0])  # xresnet18
    model = build_model(stem_node("dw_separable"), trunk, 3, 10)
    p = profile_model(model, (B, 3, 128, 128), latency=False)
    fwd, bwd = _conv_rows(p)
    for name, m in macs.items():
        assert fwd[name] == 2 * m, name
        assert bwd[name] == (1 if name == "stem.0.0" else 2) * 2 * m, name
    assert bwd["stem.1.0"] == 9_437_184  # the 9.4 M (torch's rule: 33 × 4.72 M = 155.7 M)
    # The figure for the stem's share of a training step's FLOPs (torch's rule: 7.1 %)
    assert p.totals["stem_share_flops_train"] == pytest.approx(0.032, abs=0.0015)


def test_every_registered_stem_counts_at_most_twice_forward_backward(recwarn):
    for name in stems.available():
        model = stems.build(name, 3)
        fwd, bwd = _conv_rows(profile_model(model, (1, 3, 32, 32), latency=False))
        assert (bwd <= 2 * fwd).all(), name
    # every op the stems use has a rule (a missing one would be counted as 0 and warned about)
    assert not [str(w.message) for w in recwarn if "no FLOP rule" in str(w.message)]
