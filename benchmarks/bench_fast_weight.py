"""Benchmark the fast-weight memory kernels (Phase 2's Hebbian memory and SNR moving averages)
against PyTorch and flash-linear-attention's ``chunk_simple_gla`` (CUDA).

    PYTHONPATH=src:benchmarks python benchmarks/bench_fast_weight.py [--json out.json]

The recurrence is ``S_t = exp(g_t) S_{t-1} + k_t v_t^T``, ``o_t = S_t^T q_t`` with a scalar
log decay ``g`` per head and step, which is also what fla's ``chunk_simple_gla`` computes (with
``scale=1``). Per shape ``(B, H, N, dk, dv)`` it prints one row per kernel setting of
:mod:`kizashi.models.bk.triton_fast_weight` (warps per program, IEEE or TF32 dots), the
PyTorch chunked code (``chunked_fast_weight(backend="torch")``) and fla: milliseconds of the
forward and of forward + backward (median of CUDA-event timings), and the bandwidth the bytes
a kernel must move imply, as a share of a 1 GiB device copy measured at the start of the same
run. Minimal bytes per step and head: forward reads q, k, v, g and writes o (``2 dk + 2 dv +
1`` elements); forward + backward adds reading q, k, v, g, do and writing dq, dk, dv, dg
(``4 dk + 3 dv + 2``). The fla rows use bf16 q, k, v (its usual input) and float32 g; the
kizashi rows float32 (what Phase 2 passes). fla's backward is reported as unavailable where
fla refuses to run it (Triton 3.4 - 3.7.0 on Hopper).

Shapes: Phase 2 small's memory at 64k tokens (1, 8, 65536, 32, 32), its SNR moving
averages (1, 8, 65536, 1, 64; q = k = 1) and Phase 2 base's memory (1, 8, 65536, 64, 64).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

log = logging.getLogger("bench_fast_weight")

SHAPES: dict[str, tuple[int, int, int, int, int]] = {  # name -> (B, H, N, dk, dv)
    "phase2-small memory 64k": (1, 8, 65536, 32, 32),
    "phase2-small SNR averages 64k": (1, 8, 65536, 1, 64),
    "phase2-base memory 64k": (1, 8, 65536, 64, 64),
}


@dataclass(frozen=True)
class Setting:
    """One configuration of the kizashi kernels."""

    warps: int
    precision: str  # "ieee" | "tf32"

    @property
    def name(self) -> str:
        return f"kizashi, {self.warps} warps, {self.precision}"


SETTINGS = [Setting(warps, precision) for precision in ("ieee", "tf32") for warps in (4, 8)]


def parse_settings(text: str) -> list[Setting]:
    """``"tf32:4,ieee:8"`` -> the settings (precision ``ieee`` or ``tf32``, warps a power of two)."""
    settings = []
    for item in text.split(","):
        precision, _, warps = item.strip().partition(":")
        if precision not in ("ieee", "tf32") or not warps.isdigit() or int(warps) & (int(warps) - 1):
            raise SystemExit(f"--settings: {item!r} is not PRECISION:WARPS (ieee or tf32, warps 1, 2, 4, 8 ...)")
        settings.append(Setting(int(warps), precision))
    return settings


def forward_bytes(bh: int, n: int, dk: int, dv: int, element: int = 4, g_element: int = 4) -> int:
    """Bytes the forward must move at least: read q, k, v, g; write o."""
    return bh * n * ((2 * dk + 2 * dv) * element + g_element)


def forward_backward_bytes(bh: int, n: int, dk: int, dv: int, element: int = 4, g_element: int = 4) -> int:
    """The forward's bytes plus the backward's: read q, k, v, g, do; write dq, dk, dv, dg."""
    return forward_bytes(bh, n, dk, dv, element, g_element) + bh * n * ((4 * dk + 3 * dv) * element + 2 * g_element)


def share(nbytes: int, ms: float | None, copy_bytes_per_s: float) -> float | None:
    """``nbytes / ms`` as a fraction of the copy bandwidth (None without a time)."""
    return None if ms is None else nbytes / (ms * 1e-3) / copy_bytes_per_s


def make_inputs(shape: tuple[int, int, int, int, int], device: str = "cuda") -> dict[str, torch.Tensor]:
    """Float32 ``q, k [B, H, N, dk]``, ``v [B, H, N, dv]``, ``g [B, H, N]`` (log decays in
    ``[-0.5, 0]``) and a fixed output weight ``w [B, H, N, dv]``; ``q = k = 1`` when dk = 1
    (the moving averages)."""
    b, h, n, dk, dv = shape
    gen = torch.Generator(device=device).manual_seed(0)
    if dk == 1:
        q = k = torch.ones(b, h, n, 1, device=device)
    else:
        q = torch.nn.functional.normalize(torch.randn(b, h, n, dk, device=device, generator=gen), dim=-1)
        k = torch.nn.functional.normalize(torch.randn(b, h, n, dk, device=device, generator=gen), dim=-1)
    v = torch.randn(b, h, n, dv, device=device, generator=gen)
    g = -0.5 * torch.rand(b, h, n, device=device, generator=gen)
    w = torch.randn(b, h, n, dv, device=device, generator=gen)
    return dict(q=q, k=k, v=v, g=g, w=w)


def kizashi_calls(inputs: dict[str, torch.Tensor], setting: Setting) -> tuple[Callable, Callable]:
    """``(forward, forward_backward)`` closures of the Triton kernels under ``setting``."""
    from kizashi.models.bk import triton_fast_weight as tfw

    tensors = [inputs[name].contiguous() for name in ("q", "k", "v", "g")]
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    weight = inputs["w"]

    def configure() -> None:
        tfw.BACKWARD_WARPS = tfw.CHUNK_WARPS = setting.warps

    def forward() -> None:
        configure()
        with torch.no_grad():
            tfw.FastWeightScan.apply(*tensors, None, False, setting.precision)

    def forward_backward() -> None:
        configure()
        out, _ = tfw.FastWeightScan.apply(*leaves, None, False, setting.precision)
        (out * weight).sum().backward()

    return forward, forward_backward


def torch_calls(inputs: dict[str, torch.Tensor]) -> tuple[Callable, Callable]:
    """The PyTorch chunked code (chunks of 64), float32."""
    from kizashi.models.bk.layers import chunked_fast_weight

    rate = torch.ones_like(inputs["g"])
    leaves = [inputs[name].clone().requires_grad_(True) for name in ("q", "k", "v", "g")]

    def forward() -> None:
        with torch.no_grad():
            chunked_fast_weight(inputs["q"], inputs["k"], inputs["v"], inputs["g"], rate, 64, "torch")

    def forward_backward() -> None:
        out, _ = chunked_fast_weight(*leaves, rate, 64, "torch")
        (out * inputs["w"]).sum().backward()

    return forward, forward_backward


def fla_calls(inputs: dict[str, torch.Tensor]) -> tuple[Callable, Callable]:
    """fla's ``chunk_simple_gla`` on ``[B, N, H, d]`` bf16 q, k, v and float32 g, scale 1."""
    from fla.ops.simple_gla import chunk_simple_gla

    def layout(t: torch.Tensor) -> torch.Tensor:
        return t.transpose(1, 2).contiguous()

    q, k, v = (layout(inputs[name]).to(torch.bfloat16) for name in ("q", "k", "v"))
    g = layout(inputs["g"])
    weight = layout(inputs["w"]).to(torch.bfloat16)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v, g)]

    def forward() -> None:
        with torch.no_grad():
            chunk_simple_gla(q, k, v, g=g, scale=1.0)

    def forward_backward() -> None:
        out, _ = chunk_simple_gla(*leaves[:3], g=leaves[3], scale=1.0)
        (out * weight).sum().backward()

    return forward, forward_backward


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:160]


def time_or_reason(fn: Callable, timer: Callable[[Callable], float]) -> tuple[float | None, str | None]:
    """``(ms, None)`` or ``(None, the first line of the error)``."""
    try:
        return timer(fn), None
    except Exception as err:  # noqa: BLE001 - a peer that refuses a case is reported, not fatal
        return None, _first_line(err)


def measure_shape(name: str, shape: tuple[int, int, int, int, int], settings: list[Setting],
                  copy_bytes_per_s: float, timer: Callable[[Callable], float], with_fla: bool,
                  device: str = "cuda") -> list[dict[str, Any]]:
    """Rows of one shape: every kizashi setting, PyTorch, fla."""
    b, h, n, dk, dv = shape
    inputs = make_inputs(shape, device)
    fwd_bytes, fb_bytes = forward_bytes(b * h, n, dk, dv), forward_backward_bytes(b * h, n, dk, dv)
    candidates: list[tuple[str, Callable[[], tuple[Callable, Callable]], int, int]] = [
        (setting.name, lambda setting=setting: kizashi_calls(inputs, setting), fwd_bytes, fb_bytes)
        for setting in settings]
    candidates.append(("pytorch chunked (float32)", lambda: torch_calls(inputs), fwd_bytes, fb_bytes))
    if with_fla:
        candidates.append(("fla chunk_simple_gla (bf16)", lambda: fla_calls(inputs),
                           forward_bytes(b * h, n, dk, dv, 2), forward_backward_bytes(b * h, n, dk, dv, 2)))
    rows = []
    for label, build, row_fwd_bytes, row_fb_bytes in candidates:
        try:
            forward, forward_backward = build()
        except Exception as err:  # noqa: BLE001 - e.g. fla not installed
            rows.append(dict(shape=name, row=label, forward_ms=None, forward_backward_ms=None,
                             reason=_first_line(err)))
            continue
        fwd_ms, fwd_reason = time_or_reason(forward, timer)
        fb_ms, fb_reason = time_or_reason(forward_backward, timer)
        rows.append(dict(shape=name, row=label, forward_ms=fwd_ms, forward_backward_ms=fb_ms,
                         forward_copy_share=share(row_fwd_bytes, fwd_ms, copy_bytes_per_s),
                         forward_backward_copy_share=share(row_fb_bytes, fb_ms, copy_bytes_per_s),
                         reason=fwd_reason or fb_reason))
        log.info("%s | %s: fwd %s ms, fwd+bwd %s ms %s", name, label, fwd_ms, fb_ms, fwd_reason or fb_reason or "")
        if device == "cuda":
            torch.cuda.empty_cache()
    torch_fb = next(r["forward_backward_ms"] for r in rows if r["row"].startswith("pytorch"))
    for row in rows:
        ms = row["forward_backward_ms"]
        row["x_torch_forward_backward"] = torch_fb / ms if ms and torch_fb else None
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A markdown table of :func:`measure_shape`'s rows."""

    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    def pct(value: float | None) -> str:
        return "" if value is None else f"{100 * value:.0f}%"

    lines = ["| shape | row | fwd ms | fwd %copy | fwd+bwd ms | fwd+bwd %copy | x torch (fwd+bwd) | note |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        ratio = r.get("x_torch_forward_backward")
        lines.append(f"| {r['shape']} | {r['row']} | {ms(r['forward_ms'])} | {pct(r.get('forward_copy_share'))} | "
                     f"{ms(r['forward_backward_ms'])} | {pct(r.get('forward_backward_copy_share'))} | "
                     f"{'' if ratio is None else f'{ratio:.1f}'} | {r.get('reason') or ''} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the rows and the run's settings here")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated names of SHAPES")
    parser.add_argument("--settings", default=None,
                        help="comma-separated PRECISION:WARPS kernel settings, e.g. tf32:4 (default: all of "
                             + ", ".join(f"{t.precision}:{t.warps}" for t in SETTINGS) + ")")
    parser.add_argument("--no-fla", action="store_true", help="skip the fla rows")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not torch.cuda.is_available():
        log.error("bench_fast_weight needs a CUDA device (the kernels are Triton; fla's too)")
        return 2
    import triton
    from bench_bk_core import copy_bandwidth, timed  # the script's own folder is on sys.path

    copy = copy_bandwidth()
    log.info("%s, torch %s, triton %s: device copy %.2f TB/s (read + write) = 100%%",
             torch.cuda.get_device_name(), torch.__version__, triton.__version__, copy / 1e12)
    settings = parse_settings(args.settings) if args.settings else SETTINGS
    rows = []
    for name in args.shapes.split(","):
        rows += measure_shape(name, SHAPES[name], settings, copy, timed, with_fla=not args.no_fla)
        log.info("%s done", name)
    log.info("\n%s\n", format_rows(rows))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                           triton=triton.__version__, python=platform.python_version(),
                           copy_bytes_per_s=copy, settings=[asdict(s) for s in settings], rows=rows),
                      handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
