"""Before/after of the paper spec's inference speed-ups in one process, interleaved (a shared machine
drifts too much between processes): the current networks against the same networks with the former
unfused formulas patched back in (RRDB-SFT residuals and SFT; GIA 1x1 convs on globally pooled maps).

    python benchmarks/paper_spec_ab.py --threads 2 --rounds 5

Prints the best process CPU time per forward of each network and variant, and output MP/s from it.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

import cmosx.models.gia as gia
from cmosx.engine.precision_cache import _cpu_model
from cmosx.models.rrdb_sft import ResidualDenseBlock, RRDBSFTBlock, SFTLayer

sys.path.insert(0, str(Path(__file__).parent))
from paper_spec_speed import build  # noqa: E402


def _rdb_before(self, x):
    feats = [x]
    for conv in self.convs:
        feats.append(F.leaky_relu(conv(torch.cat(feats, dim=1)), 0.2))
    return x + 0.2 * self.last(torch.cat(feats, dim=1))


def _sft_before(self, feat, prior):
    joined = torch.cat([feat, prior], dim=1)
    return feat * torch.sigmoid(self.scale(joined)) + self.shift(joined)


def _block_before(self, x, prior):
    return x + 0.2 * self.rdbs(self.sft(x, prior))


@contextmanager
def former_formulas():
    """Patch the unfused formulas back in (same weights, same maths)."""
    saved = (ResidualDenseBlock.forward, SFTLayer.forward, RRDBSFTBlock.forward, gia._pointwise)
    ResidualDenseBlock.forward, SFTLayer.forward, RRDBSFTBlock.forward = _rdb_before, _sft_before, _block_before
    gia._pointwise = lambda conv, x: conv(x)
    try:
        yield
    finally:
        ResidualDenseBlock.forward, SFTLayer.forward, RRDBSFTBlock.forward, gia._pointwise = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", default="120x160", help="LR input HxW")
    parser.add_argument("--fold", action="store_true", help="fold BatchNorm as the engine does")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.size.split("x"))
    cmos, sr, lr, blur, semantic = build(40, args.fold, height, width)
    nets = {"cmos": lambda: cmos(lr), "sr": lambda: sr(lr, blur, semantic)}
    best = {(net, variant): float("inf") for net in nets for variant in ("before", "after")}
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for fn in nets.values():  # warm-up both variants
            fn()
            with former_formulas():
                fn()
        for _ in range(args.rounds):
            for net, fn in nets.items():
                for variant in ("before", "after"):
                    if variant == "before":
                        with former_formulas():
                            start = time.process_time()
                            fn()
                    else:
                        start = time.process_time()
                        fn()
                    best[(net, variant)] = min(best[(net, variant)], time.process_time() - start)
    out_mp = 16 * height * width / 1e6
    print(
        f"{_cpu_model()}, {args.threads} threads, torch {torch.__version__}, bf16 channels-last, paper spec, "
        f"{height}x{width} LR, fold={args.fold}, best of {args.rounds} interleaved rounds (process CPU s)"
    )
    for variant in ("before", "after"):
        c, s = best[("cmos", variant)], best[("sr", variant)]
        rate = args.threads * out_mp / (c + s)
        print(
            f"{variant:>6}: CMOS {c:.3f} s, SR {s:.3f} s, total {c + s:.3f} s CPU -> {rate:.3f} output MP/s "
            f"on {args.threads} cores (CPU time / threads)"
        )


if __name__ == "__main__":
    main()
