"""Speed of the ``paper`` spec's two networks (random weights) in bf16 channels-last on the CPU.

Prints output megapixels per second for CMOS + RRDB-SFT on one LR input (default 120 x 160, the size
``cmosx bench --networks`` uses for the paper spec), wall and process CPU seconds, and optionally the
torch.profiler self-time table. ``--save`` / ``--compare`` write and check the outputs (safetensors) so
an optimisation can be shown to compute the same thing.

    python benchmarks/paper_spec_speed.py --threads 2 --repeats 5 [--profile] [--fold]
"""

from __future__ import annotations

import argparse
import time

import torch
from safetensors.torch import load_file, save_file

from cmosx.engine.precision_cache import _cpu_model
from cmosx.models.cmos import CMOS
from cmosx.models.fuse import fold_batchnorm
from cmosx.models.rrdb_sft import RRDBSFT
from cmosx.models.specs import SPECS


def build(num_classes: int, fold: bool, height: int, width: int):
    spec = SPECS["paper"]
    torch.manual_seed(0)
    cmos = CMOS(spec.cmos, num_classes).eval()
    sr = RRDBSFT(spec.sr, num_classes).eval()
    if fold:
        cmos, sr = fold_batchnorm(cmos), fold_batchnorm(sr)
    cl = torch.channels_last
    cmos, sr = cmos.to(memory_format=cl), sr.to(memory_format=cl)
    g = torch.Generator().manual_seed(1)
    lr = torch.rand(1, 3, height, width, generator=g).contiguous(memory_format=cl)
    blur = (torch.rand(1, 1, height, width, generator=g) * 5).contiguous(memory_format=cl)
    semantic = torch.softmax(torch.randn(1, num_classes, height, width, generator=g), dim=1).contiguous(
        memory_format=cl
    )
    return cmos, sr, lr, blur, semantic


def run(cmos, sr, lr, blur, semantic, bf16: bool = True):
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        maps = cmos(lr)
        out = sr(lr, blur, semantic)
    return {"blur": maps.blur_lr.float(), "logits": maps.logits_lr.float(), "sr": out.float()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", default="120x160", help="LR input HxW")
    parser.add_argument("--classes", type=int, default=40)
    parser.add_argument("--fold", action="store_true", help="fold BatchNorm as the engine does")
    parser.add_argument("--fp32", action="store_true", help="float32 instead of bf16 autocast")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--save", help="write the outputs to this safetensors file")
    parser.add_argument("--compare", help="compare the outputs with this safetensors file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.size.split("x"))
    nets = build(args.classes, args.fold, height, width)
    bf16 = not args.fp32
    outputs = run(*nets, bf16=bf16)  # warm-up
    walls, cpus = [], []
    for _ in range(args.repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        run(*nets, bf16=bf16)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    out_mp = 16 * height * width / 1e6
    best_wall, best_cpu = min(walls), min(cpus)
    print(
        f"{_cpu_model()}, {args.threads} threads, torch {torch.__version__}, {'bf16' if bf16 else 'fp32'} "
        "channels-last, "
        f"paper spec CMOS + SR on {height}x{width} LR, fold={args.fold}"
    )
    print(
        f"best wall {best_wall:.3f} s -> {out_mp / best_wall:.3f} output MP/s; "
        f"best CPU {best_cpu:.3f} s -> {args.threads * out_mp / best_cpu:.3f} output MP/s per {args.threads} cores "
        f"(CPU time / threads)"
    )
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run(*nets, bf16=bf16)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
    if args.save:
        save_file({k: v.contiguous() for k, v in outputs.items()}, args.save)
    if args.compare:
        ref = load_file(args.compare)
        for k, v in outputs.items():
            diff = (v - ref[k]).abs().max().item()
            scale = ref[k].abs().max().item()
            print(f"{k}: max abs diff {diff:.3e} (max |ref| {scale:.3e})")


if __name__ == "__main__":
    main()
