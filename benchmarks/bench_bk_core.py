"""Benchmark BK-Core: Triton kernel vs the PyTorch reference vs a dense solve (CUDA).

    PYTHONPATH=src python benchmarks/bench_bk_core.py            # table
    PYTHONPATH=src python benchmarks/bench_bk_core.py --sweep    # block/warp settings too

Prints, per (rows M = batch*heads, length N), times in ms for the forward pass (no grad) and
forward+backward, the ratios reference/Triton and dense/Triton, and the Triton forward's
effective bandwidth: the bytes a kernel must move at least (read a, b, c and write g: 32 B
per element in complex64) divided by the time, as a share of the bandwidth of a 1 GiB
device-to-device copy measured at the start of the same run (read + write counted). The
"traffic" column counts the bytes the kernel really moves (32 B/element for rows that fit
one block, 56 B/element for longer rows, whose inputs are read twice). Forward + backward
is reported the same way: at least 88 B/element (the forward's 32, then reading a, b, c and
the upstream gradient and writing the gradients of a, b, c: 56).

``--quick`` runs the first 4 sizes and one long-row case (M=256, N=65536).
"""

from __future__ import annotations

import argparse
import time

import torch

from kizashi.models.bk import core, triton_core

FORWARD_BYTES = 32  # per element: read a, b, c, write g (complex64)
FORWARD_BACKWARD_BYTES = 88  # the forward's 32 + read a, b, c, upstream gradient, write 3 gradients
QUICK_SIZES = [(64, 1024), (512, 1024), (64, 4096), (256, 4096), (256, 65536)]

SIZES = [  # (M = batch*heads, N)
    (64, 1024), (512, 1024), (64, 4096), (256, 4096), (64, 16384), (256, 16384),
    (64, 65536), (256, 65536), (512, 65536), (16, 262144), (4, 1_000_000), (32, 1_000_000),
]


def timed(fn, budget_s: float = 0.4, max_reps: int = 50) -> float:
    """Median milliseconds of ``fn()`` (CUDA events), repeating within ``budget_s``."""
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    once = time.perf_counter() - t0
    reps = max(1, min(max_reps, int(budget_s / max(once, 1e-6))))
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def inputs(m: int, n: int, requires_grad: bool = False):
    gen = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(m, n, device="cuda", generator=gen) - 0.05j * torch.rand(m, n, device="cuda", generator=gen)
    b = torch.randn(m, n - 1, dtype=torch.complex64, device="cuda", generator=gen) * 0.5
    c = torch.randn(m, n - 1, dtype=torch.complex64, device="cuda", generator=gen) * 0.5
    z = torch.full((m, 1), 0.1 + 0.5j, dtype=torch.complex64, device="cuda")
    return [t.requires_grad_(requires_grad) for t in (a.to(torch.complex64), b, c, z)]


def fwd(backend: str, a, b, c, z):
    with torch.no_grad():
        return core.bk_core(a, b, c, z, backend=backend)


def fwd_bwd(backend: str, a, b, c, z, weight):
    for t in (a, b, c, z):
        t.grad = None
    g = core.bk_core(a, b, c, z, backend=backend)
    torch.autograd.backward(g, weight)


def traffic_bytes(n: int) -> int:
    return 32 if n <= triton_core.FUSED_MAX else 56


def table(sizes, copy_bytes_per_s: float, with_backward: bool = True) -> None:
    """One line per (M, N); bandwidths as a share of ``copy_bytes_per_s`` (measured)."""
    print(
        f"{'M':>5} {'N':>8} | {'triton':>8} {'torch':>9} {'dense':>9} | {'x torch':>8} "
        f"{'x dense':>8} | {'eff TB/s':>8} {'%copy':>6} {'traffic':>8} | "
        f"{'tri f+b':>8} {'torch f+b':>9} {'x':>6} {'f+b TB/s':>8} {'%copy':>6}"
    )
    for m, n in sizes:
        a, b, c, z = inputs(m, n)
        t_tri = timed(lambda: fwd("triton", a, b, c, z))
        t_ref = timed(lambda: fwd("torch", a, b, c, z), budget_s=1.0, max_reps=5)
        g_tri, g_ref = fwd("triton", a, b, c, z), fwd("torch", a, b, c, z)
        err = ((g_tri - g_ref).abs().max() / g_ref.abs().max()).item()
        t_dense = float("nan")
        if n <= 2048:
            rows = max(1, min(m, (2**31) // (n * n * 8)))  # dense on a subset of rows, scaled
            ad, bd, cd, zd = (t[:rows] for t in (a, b, c, z))
            t_dense = timed(lambda: core.bk_core_dense(ad, bd, cd, zd), max_reps=5) * m / rows
        eff = FORWARD_BYTES * m * n / (t_tri * 1e-3)
        real = traffic_bytes(n) * m * n / (t_tri * 1e-3)
        line = (
            f"{m:>5} {n:>8} | {t_tri:8.3f} {t_ref:9.2f} {t_dense:9.1f} | {t_ref / t_tri:8.1f} "
            f"{t_dense / t_tri:8.0f} | {eff / 1e12:8.2f} {100 * eff / copy_bytes_per_s:5.0f}% "
            f"{real / 1e12:6.2f}TB/s |"
        )
        del a, b, c, z
        if with_backward:
            a, b, c, z = inputs(m, n, requires_grad=True)
            weight = torch.randn(m, n, dtype=torch.complex64, device="cuda")
            t_tri_b = timed(lambda: fwd_bwd("triton", a, b, c, z, weight))
            t_ref_b = timed(lambda: fwd_bwd("torch", a, b, c, z, weight), budget_s=1.0, max_reps=5)
            eff_b = FORWARD_BACKWARD_BYTES * m * n / (t_tri_b * 1e-3)
            line += (f" {t_tri_b:8.3f} {t_ref_b:9.2f} {t_ref_b / t_tri_b:6.1f} {eff_b / 1e12:8.2f}"
                     f" {100 * eff_b / copy_bytes_per_s:5.0f}%")
            del a, b, c, z, weight
        print(line + f"   (rel err vs torch {err:.1e})", flush=True)
        torch.cuda.empty_cache()


def sweep() -> None:
    """Triton forward time for block/warp settings: one block per row (``fused``) and the
    three-kernel path for long rows (``chunk``)."""
    print("\nsweep: Triton forward, best settings first")
    cases = [
        ((256, 65536), [(512, ch, w, sb) for ch in (1024, 2048, 4096) for w in (4, 8) for sb in (4, 8, 16)]),
        ((32, 1_000_000), [(512, ch, w, 8) for ch in (1024, 2048, 4096) for w in (4, 8)]),
        ((512, 1024), [(4096, 4096, w, sb) for w in (4, 8) for sb in (4, 8)]),
        ((256, 4096), [(4096, 4096, w, sb) for w in (4, 8, 16) for sb in (4, 8)]),
    ]
    for (m, n), settings in cases:
        a, b, c, z = inputs(m, n)
        zf = z.reshape(m)
        results = []
        for fm, ch, w, sb in settings:
            try:
                t = timed(lambda: triton_core.forward(
                    a, b, c, zf, fused_max=fm, chunk=ch, num_warps=w, sub=sb))
            except Exception as err:  # compile failures (e.g. out of registers/shared memory)
                print(f"  M={m} N={n} chunk={ch} warps={w} sub={sb}: {type(err).__name__}: {err}"[:300])
                continue
            results.append((t, fm, ch, w, sb))
        results.sort()
        for t, fm, ch, w, sb in results:
            path = "fused" if n <= fm else f"chunk={ch}"
            print(
                f"  M={m:>4} N={n:>8} {path:>10} warps={w:>2} sub={sb:>2}: {t:8.3f} ms "
                f"({32 * m * n / (t * 1e-3) / 1e12:.2f} TB/s effective)"
            )
        del a, b, c, z
        torch.cuda.empty_cache()


def copy_bandwidth(numel: int = 2**28) -> float:
    """Bytes/s of a device-to-device copy of ``numel`` float32 (read + write counted)."""
    x = torch.empty(numel, dtype=torch.float32, device="cuda")
    return 2 * numel * 4 / (timed(x.clone) * 1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="also sweep block/warp settings")
    parser.add_argument("--no-backward", action="store_true")
    parser.add_argument("--quick", action="store_true", help="first 4 sizes and one long-row case")
    parser.add_argument("--sweep-only", action="store_true", help="only the settings sweep")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_bk_core needs a CUDA device")
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  complex64")
    print(
        f"triton settings: FUSED_MAX={triton_core.FUSED_MAX} CHUNK={triton_core.CHUNK} "
        f"NUM_WARPS={triton_core.NUM_WARPS}"
    )
    copy = copy_bandwidth()
    print(f"torch copy of 1 GiB: {copy / 1e12:.2f} TB/s (read + write): the %copy columns' 100%")
    if not args.sweep_only:
        table(QUICK_SIZES if args.quick else SIZES, copy, with_backward=not args.no_backward)
    if args.sweep or args.sweep_only:
        sweep()


if __name__ == "__main__":
    main()
