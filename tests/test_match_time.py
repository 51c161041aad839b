"""stem.match=time:<stem or number>ms: the search driven by deterministic fake timers (time ∝ FLOPs, noisy, drifting,
slowed in bursts), the refusals (noise, unreachable, bad spec), one real CPU timing end to end, and the config check."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import stems
import experiments.match
from profiler.timing import interleaved
from experiments.config import ConfigError, check_command_line
from experiments.model import resolve_stem
from experiments.match import TOLERANCE, match_params
from profiler.stem_cost import cost
from tests.conftest import TINY
from tests.test_stems import one_sentence

SIZE = 32  # px: the fake timer runs each stem forward for real, so the sizes stay tiny
NS_PER_FLOP = 1e-10  # the fake machine: xresnet_3conv at bs 2, 32 px takes about 3 ms


class FakeTimer:
    """time = FLOPs of the stem's forward on the batch x NS_PER_FLOP, times `factors(call, stem)` (1 by default)."""

    def __init__(self, factors=lambda call, stem: 1.0):
        self.factors, self.calls, self.flops, self.dtypes = factors, 0, {}, set()

    def __call__(self, stem, x, dtype) -> float:
        if id(stem) not in self.flops:  # counted once per module (kept alive here, so its id is never reused)
            counter = FlopCounterMode(display=False)
            with counter, torch.no_grad():
                stem(x)
            self.flops[id(stem)] = (stem, counter.get_total_flops())
        self.calls += 1
        self.dtypes.add(dtype)
        return self.flops[id(stem)][1] * NS_PER_FLOP * self.factors(self.calls - 1, stem)


def has_7x7(stem) -> bool:
    return any(getattr(m, "kernel_size", None) == (7, 7) for m in stem.modules())


def time_match(match, name="xresnet_3conv", timer=None, **kw):
    return match_params(name, 3, 64, SIZE, match, {}, batch_size=2, timer=timer or FakeTimer(), **kw)


def test_interleaved_rounds_rotate_and_stop_at_the_time_asked():
    order: list[str] = []
    steps = {n: (lambda n=n: order.append(n) or 0.1) for n in "abc"}
    times = interleaved(steps, min_rounds=2, min_s=0.45, max_rounds=10)
    assert order[:9] == list("abcbcacab") and {len(t) for t in times.values()} == {5}  # 5 x 0.1 s >= 0.45 s
    assert {len(t) for t in interleaved(steps, min_rounds=2, min_s=10, max_rounds=3).values()} == {3}


def test_time_match_to_a_stem_reaches_it_like_a_flops_match():
    timer = FakeTimer()
    params, info = time_match("time:resnet_7x7", timer=timer)
    assert info["target_kind"] == "time" and info["target_spec"] == "time:resnet_7x7" and info["unit"] == "s"
    assert abs(info["achieved_value"] / info["target_value"] - 1) <= TOLERANCE
    assert (info["device"], info["batch_size"], info["repeatability"], info["precision"]) == ("cpu", 2, 0.0, "fp32")
    assert info["timings"] == timer.calls and timer.dtypes == {None}
    # time ∝ FLOPs here, so the widths time-matching picks also match resnet_7x7's FLOPs
    target = cost("resnet_7x7", 3, SIZE)["flops"]
    achieved = cost("xresnet_3conv", 3, SIZE, 64, params)["flops"]
    assert params["widths"][-1] == 64 and abs(achieved / target - 1) <= TOLERANCE
    assert info["target_value"] == pytest.approx(2 * target * NS_PER_FLOP)


def test_time_match_times_at_the_runs_precision_and_memory_format():
    timer = FakeTimer()
    _, info = time_match("time:resnet_7x7", timer=timer, precision="bf16", channels_last=True)
    assert timer.dtypes == {torch.bfloat16} and (info["precision"], info["channels_last"]) == ("bf16", True)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for stem, _ in timer.flops.values()
               for p in stem.parameters() if p.dim() == 4)


def test_load_that_comes_and_goes_cancels_in_the_ratio():
    # the machine slows down 4x over the match, and every 7th step is twice as slow: both stems see it alike
    drift = FakeTimer(lambda call, stem: (1 + call / 150) * (2.0 if call % 7 == 0 else 1.0))
    params, info = time_match("time:resnet_7x7", timer=drift)
    assert drift.calls > 450 and info["repeatability"] <= TOLERANCE / 2
    achieved = cost("xresnet_3conv", 3, SIZE, 64, params)["flops"]
    assert abs(achieved / cost("resnet_7x7", 3, SIZE)["flops"] - 1) <= TOLERANCE


def test_time_match_in_milliseconds_is_monotone():
    base = 2 * cost("deep_wide", 3, SIZE)["flops"] * NS_PER_FLOP
    small, info = time_match(f"time:{0.5 * base * 1e3:.4f}ms", name="deep_wide")
    large, _ = time_match(f"time:{2 * base * 1e3:.4f}ms", name="deep_wide")
    assert info["target_value"] == pytest.approx(0.5 * base, rel=1e-3)
    assert abs(info["achieved_value"] / info["target_value"] - 1) <= TOLERANCE
    assert all(s <= w for s, w in zip(small["widths"], large["widths"])) and small["widths"] != large["widths"]


def test_noisy_timings_are_refused(monkeypatch):
    # every step ±30 %, independently, and at most 1 s of steps per comparison: a machine truly too noisy for 5 %
    monkeypatch.setattr(experiments.match, "MAX_COMPARE_S", 1.0)
    rng = np.random.default_rng(0)
    noisy = FakeTimer(lambda call, stem: rng.lognormal(0, 0.3))
    with pytest.raises(stems.StemError) as e:
        time_match("time:resnet_7x7", timer=noisy)
    msg = str(e.value)
    assert one_sentence(msg), msg
    assert re.fullmatch(r"stem.match=time:resnet_7x7 cannot be held to 5 % here: the target timed against a copy of "
                        r"itself on cpu is off by up to ([0-9.]+) % in 3 tries, known to ±([0-9.]+) % after up to "
                        r"[0-9]+ rounds each; use stem.match=flops:resnet_7x7, or a quieter machine or a larger "
                        r"train.bs.", msg), msg
    assert float(re.search(r"±([0-9.]+) %", msg).group(1)) > 100 * TOLERANCE / 2
    # ±1 % noise is within what 5 % allows
    rng = np.random.default_rng(0)
    _, info = time_match("time:resnet_7x7", timer=FakeTimer(lambda call, stem: rng.uniform(0.99, 1.01)))
    assert 0 < info["repeatability"] <= TOLERANCE / 2 and 0 < info["uncertainty"] <= experiments.match.PRECISION


def test_bimodal_steps_compare_within_the_precision():
    # 40 % of the steps pay 12 % more (page faults of fresh activations): the median of a few steps jumps between
    # the two modes; the trimmed mean of the paired ratios counts each at its frequency
    rng = np.random.default_rng(1)
    clock = experiments.match._Clock(FakeTimer(lambda call, stem: 1.12 if rng.random() < 0.4 else 1.0), "cpu", 2, 3,
                                     SIZE, 64)
    a = clock.stem("resnet_7x7", {})
    nulls = [clock.compare(a, clock.stem("resnet_7x7", {})) for _ in range(5)]
    assert all(abs(c.ratio - 1) <= TOLERANCE / 2 and 0 < c.uncertainty <= experiments.match.PRECISION for c in nulls)
    # a stem twice as costly is told apart in the first rounds
    twice = clock.compare(clock.stem("xresnet_3conv", {"widths": [32, 64, 64]}), a)
    assert twice.rounds == experiments.match.MIN_ROUNDS and twice.ratio > 1 + 2 * TOLERANCE


def test_a_change_between_search_and_retiming_is_refused(monkeypatch):
    timer, starts = FakeTimer(), []
    compare = experiments.match._Clock.compare
    monkeypatch.setattr(experiments.match._Clock, "compare", lambda clock, a, b: starts.append(timer.calls) or compare(clock, a, b))
    time_match("time:resnet_7x7", timer=timer)
    last = starts[-1]  # the last comparison: the pick against the target, timed again
    # from then on the candidate alone takes 20 % longer (its target, timed beside it, does not)
    slower = FakeTimer(lambda call, stem: 1.2 if call >= last and not has_7x7(stem) else 1.0)
    with pytest.raises(stems.StemError) as e:
        time_match("time:resnet_7x7", timer=slower)
    assert one_sentence(str(e.value)) and "held during the search but not when timed again" in str(e.value)
    off = float(re.search(r"\(\+([0-9.]+) %\)", str(e.value)).group(1))
    assert 1.2 * (1 - TOLERANCE) - 1 <= off / 100 <= 1.2 * (1 + TOLERANCE) - 1  # +20 % on a pick within 5 %


def test_unreachable_time_gives_the_closest():
    with pytest.raises(stems.StemError) as e:
        time_match("time:0.0001ms")
    msg = str(e.value)
    assert one_sentence(msg) and "cannot reach 0.000 ms (time:0.0001ms)" in msg, msg
    assert re.search(r": even at its narrowest, widths \[8, 8, 64\], it takes [0-9.]+ ms, because what no width search "
                     r"narrows \(its output layer, 64 wide by the stem contract, and its number of layers\) already costs "
                     r"more; match it to a costlier target or use a shallower stem\.$", msg), msg


def test_a_time_missed_between_the_bounds_says_why_and_the_fixes():
    # between the bounds a time missed means it did not rise steadily with the widths (noise, or kernels favouring
    # some widths): said, with the fixes; an exact count (FLOPs) missed there is a real gap and is said plainly
    unreachable = experiments.match._unreachable
    msg = str(unreachable("conv2_s2", "time", 1.797e-3, "time:resnet_7x7", 28, 1, 1.985e-3, (19, 64)))
    assert one_sentence(msg) and msg == (
        "stem 'conv2_s2' cannot reach 1.797 ms (time:resnet_7x7) at 28 px within widths 8..2048: the closest it gets "
        "is 1.985 ms with widths [19, 64]; its time did not rise steadily with the widths here (noise, or kernels "
        "that favour some widths): use a larger train.bs or a quieter machine, or stem.match=flops:resnet_7x7."), msg
    assert str(unreachable("conv2_s2", "flops", 1e8, "flops:resnet_7x7", 28, 1, 1.2e8, (19, 64))).endswith("widths [19, 64].")
    assert str(unreachable("conv2_s2", "time", 2e-3, "time:2ms", 28, 1, 2.2e-3, (19, 64))).endswith(
        "or stem.match=flops:<stem or number>.")


@pytest.mark.parametrize("match,words", [
    ("time:", "stem.match must read flops:<stem or number>, params:<stem or number> or time:<stem or milliseconds"),
    ("time:abc", "unknown stem 'abc'; choose one of: conv2_s2, "),
    ("time:5", "stem.match=time:5 needs its time in milliseconds; write time:<number>ms like time:2.5ms"),
    ("time:5s", "stem.match=time:5s needs its time in milliseconds"),
    ("time:0ms", "stem.match target must be positive"),
])
def test_bad_time_specs_are_one_sentence(match, words):
    timer = FakeTimer()
    with pytest.raises(stems.StemError) as e:
        time_match(match, timer=timer)
    assert one_sentence(str(e.value)) and str(e.value).startswith(words), str(e.value)
    assert timer.calls == 0  # refused before anything is timed
    with pytest.raises(stems.StemError, match="has no widths to scale"):
        time_match("time:2ms", name="resnet_7x7")


@pytest.mark.slow
def test_real_timing_on_cpu_end_to_end(monkeypatch):
    # at 16 px the time is mostly overhead, so on a loaded machine the noise may decide: a refusal for noise, for a
    # drift, or for a target the noisy timings never came within 5 % of is a valid outcome, a crash is not
    monkeypatch.setattr(experiments.match, "MAX_COMPARE_S", 0.05)
    monkeypatch.setattr(experiments.match, "MIN_ROUNDS", 6)
    monkeypatch.setattr(experiments.match, "MAX_ROUNDS", 6)
    try:
        params, info = match_params("xresnet_3conv", 3, 64, 16, "time:xresnet_3conv", {}, batch_size=2)
    except stems.StemError as e:
        noise = "cannot be held to 5 % here|not when timed again|cannot reach"
        assert one_sentence(str(e)) and re.search(noise, str(e)), str(e)
    else:
        assert info["target_kind"] == "time" and info["target_value"] > 0 and params["widths"][-1] == 64
        assert info["repeatability"] <= TOLERANCE / 2
        assert abs(info["achieved_value"] / info["target_value"] - 1) <= TOLERANCE


def test_resolve_stem_times_on_the_runs_device_and_batch(monkeypatch):
    monkeypatch.setattr(experiments.match, "train_step_time", FakeTimer())
    node, info = resolve_stem({"name": "xresnet_3conv", "match": "time:resnet_7x7"}, 3, SIZE, "cpu", 4)
    assert node["match"] is None and node["widths"] == info["widths"] and info["image_size"] == SIZE
    assert (info["target_kind"], info["device"], info["batch_size"]) == ("time", "cpu", 4)


def test_config_check_accepts_time_matches_and_refuses_bad_ones():
    assert check_command_line([*TINY, "stem.match=time:resnet_7x7"]) == 1
    assert check_command_line([*TINY, "stem.match=time:2.5ms"]) == 1
    for bad in ("time:", "time:5", "time:2.5"):
        with pytest.raises(ConfigError) as refused:
            check_command_line([*TINY, f"stem.match={bad}"])
        assert str(refused.value).startswith(f"stem.match={bad} is not valid; use flops:<stem or number>, "
                                             "params:<stem or number> or time:<stem or milliseconds like 2.5ms>.")
