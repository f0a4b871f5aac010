"""cmosx.ops.timing: the one timing loop (warm-up, best of the rounds, a sync after every call) and FLOP counter."""

import torch

from cmosx.ops import timing


def test_best_time_keeps_the_fastest_round_after_a_warm_up(monkeypatch):
    durations = iter([5.0, 3.0, 4.0])  # the warm-up call is not timed
    now = [0.0]

    def fake_perf_counter():
        return now[0]

    calls, syncs = [], []

    def fn():
        calls.append(1)
        if len(calls) > 1:
            now[0] += next(durations)

    monkeypatch.setattr(timing.time, "perf_counter", fake_perf_counter)
    assert timing.best_time(fn, lambda: syncs.append(1), repeats=3) == 3.0
    assert len(calls) == 4 and len(syncs) == 4  # one warm-up, three timed; each waits for the device


def test_interleaved_best_alternates_the_functions():
    order = []
    a, b = (lambda: order.append("a")), (lambda: order.append("b"))
    times = timing.interleaved_best([a, b], rounds=2)
    assert order == ["a", "b", "a", "b", "a", "b"] and len(times) == 2 and min(times) >= 0


def test_count_flops_counts_two_per_multiply_accumulate():
    conv = torch.nn.Conv2d(4, 8, 3, padding=1)
    x = torch.rand(1, 4, 10, 12)
    with torch.no_grad():
        assert timing.count_flops(lambda: conv(x)) == 2 * 4 * 8 * 9 * 10 * 12
    timing.synchronize(torch.device("cpu"))  # nothing to wait for on the CPU


def test_count_flops_counts_fused_convolutions_as_plain_ones():
    from cmosx.ops.fused_conv import conv_act

    conv = torch.nn.Conv2d(4, 8, 3, padding=1)
    x = torch.rand(1, 4, 10, 12).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert timing.count_flops(lambda: conv_act(conv, x, "relu")) == 2 * 4 * 8 * 9 * 10 * 12
