"""Imaginary parts of the nontrivial zeros of the Riemann zeta function, and the
initializations built from them (Phase 2's ``use_zeta_init``).

The zeros ``1/2 + i*gamma_k`` (``gamma_1 = 14.134725141734693...``) are irregularly spaced
(their gaps repel like the eigenvalues of a random Hermitian matrix), which is what the
zeta initialization uses them for: spectral shifts, position frequencies and resonance modes
that are spread out without the exact degeneracies of a regular grid.

* the first ``len(ZETA_ZEROS_IMAG) = 100`` zeros are a hard-coded table (mpmath
  ``zetazero``, 15 significant digits);
* beyond the table, :func:`zeta_zeros` computes them: Hardy's ``Z(t) = exp(i theta(t))
  zeta(1/2 + it)`` (real for real ``t``) is evaluated on a grid by Euler-Maclaurin
  summation in complex128, its sign changes are bracketed and bisected. The test suite
  checks the computed zeros against the table (first 100) and against mpmath values
  (#101 ... #1000). mpmath is not a dependency.

Everything here runs on the CPU in float64, with no SVD: the only factorization is a QR of
a small ``[dim, modes]`` matrix in :func:`zeta_mode_basis`, done on the CPU in float64, so
nothing here calls a CUDA solver (``cusolver``). Callers move the results to their device.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import torch
from torch import Tensor

ZETA_ZEROS_IMAG: tuple[float, ...] = (
    14.1347251417347, 21.0220396387716, 25.0108575801457, 30.4248761258595,
    32.9350615877392, 37.5861781588257, 40.9187190121475, 43.327073280915,
    48.0051508811672, 49.7738324776723, 52.9703214777145, 56.4462476970634,
    59.3470440026024, 60.8317785246098, 65.1125440480816, 67.0798105294942,
    69.546401711174, 72.0671576744819, 75.7046906990839, 77.1448400688748,
    79.3373750202494, 82.910380854086, 84.7354929805171, 87.4252746131252,
    88.8091112076345, 92.4918992705585, 94.6513440405199, 95.8706342282453,
    98.8311942181937, 101.317851005731, 103.725538040478, 105.446623052326,
    107.168611184276, 111.02953554317, 111.874659176993, 114.320220915453,
    116.226680320858, 118.790782865976, 121.370125002421, 122.946829293553,
    124.256818554346, 127.516683879596, 129.578704199956, 131.087688530933,
    133.497737202998, 134.756509753374, 138.116042054533, 139.736208952121,
    141.123707404021, 143.111845807621, 146.000982486766, 147.42276534256,
    150.053520420785, 150.925257612241, 153.024693811199, 156.112909294238,
    157.597591817594, 158.84998817142, 161.188964137596, 163.030709687182,
    165.5370691879, 167.184439978175, 169.094515415569, 169.911976479412,
    173.411536519592, 174.754191523366, 176.44143429771, 178.3774077761,
    179.916484020257, 182.207078484366, 184.874467848388, 185.598783677707,
    187.228922583502, 189.416158656017, 192.026656360714, 193.079726603846,
    195.265396679529, 196.876481840958, 198.015309676252, 201.264751943704,
    202.493594514141, 204.189671803105, 205.394697202163, 207.906258887806,
    209.576509716856, 211.690862595365, 213.347919359713, 214.547044783491,
    216.169538508264, 219.067596349021, 220.714918839314, 221.430705554693,
    224.007000254604, 224.983324669582, 227.421444279679, 229.337413305525,
    231.250188700499, 231.98723525318, 233.693404178908, 236.524229665816,
)
"""``gamma_1 ... gamma_100``: imaginary parts of the first 100 nontrivial zeros."""

_GRID_STEP = 0.05  # bracket grid in t; the first 1000 zeros are >= 0.16 apart (a closer pair in
# one cell would hide both zeros: _computed_zeros checks the count against Riemann-von Mangoldt)
_BISECTIONS = 48
_BERNOULLI_TERMS = 12


@functools.lru_cache(maxsize=1)
def _bernoulli_over_factorial() -> tuple[float, ...]:
    """``B_2k / (2k)!`` for ``k = 1 .. _BERNOULLI_TERMS`` (exact fractions, Akiyama-Tanigawa)."""
    count = 2 * _BERNOULLI_TERMS + 1
    numbers: list[Fraction] = []
    row = [Fraction(0)] * (count + 1)
    for m in range(count + 1):
        row[m] = Fraction(1, m + 1)
        for j in range(m, 0, -1):
            row[j - 1] = j * (row[j - 1] - row[j])
        numbers.append(row[0])  # B_m with B_1 = +1/2 (only even indices are used)
    return tuple(float(numbers[2 * k] / math.factorial(2 * k)) for k in range(1, _BERNOULLI_TERMS + 1))


def riemann_siegel_theta(t: Tensor) -> Tensor:
    """``theta(t) = arg Gamma(1/4 + it/2) - (t/2) log pi`` for ``t >= 10`` (Stirling series,
    error < 1e-12 there). ``t`` float64 ``[...]`` -> ``[...]``."""
    t = t.to(torch.float64)
    inv = 1.0 / t
    return (t / 2 * torch.log(t / (2 * math.pi)) - t / 2 - math.pi / 8 + inv / 48
            + 7 * inv**3 / 5760 + 31 * inv**5 / 80640 + 127 * inv**7 / 430080)


def hardy_z(t: Tensor) -> Tensor:
    """Hardy's ``Z(t)`` (real, ``|Z(t)| = |zeta(1/2 + it)|``, zero exactly at the zeta zeros)
    for float64 ``t [P]`` with ``10 <= t``; Euler-Maclaurin with ``M = ceil(max t / pi) + 10``
    terms and 12 Bernoulli corrections (relative error ~1e-10 up to t ~ 2000)."""
    t = t.to(device="cpu", dtype=torch.float64).reshape(-1)
    if t.numel() == 0:
        return t
    if float(t.min()) < 10.0:
        raise ValueError(f"hardy_z is accurate for t >= 10 only, got min t = {float(t.min())}")
    terms = int(math.ceil(float(t.max()) / math.pi)) + 10
    s = torch.complex(torch.full_like(t, 0.5), t)  # [P]
    n = torch.arange(1, terms, dtype=torch.float64, device="cpu")  # [M - 1]
    log_n = torch.log(n)
    # sum_{n < M} n^-s = sum n^-1/2 exp(-i t log n)
    head = (torch.exp(-0.5 * log_n)[None, :] * torch.exp(-1j * t[:, None] * log_n[None, :])).sum(-1)
    big = float(terms)
    power = torch.exp(-s * math.log(big))  # M^-s
    total = head + big * power / (s - 1) + 0.5 * power
    rising = s.clone()  # s (s+1) ... (s+2k-2)
    m_power = power / big  # M^{-s-1}
    for k, coefficient in enumerate(_bernoulli_over_factorial(), start=1):
        total = total + coefficient * rising * m_power
        rising = rising * (s + 2 * k - 1) * (s + 2 * k)
        m_power = m_power / (big * big)
    return (torch.exp(1j * riemann_siegel_theta(t)) * total).real


def _zero_count_estimate(t: float) -> float:
    """Riemann-von Mangoldt: ``N(T) ~ theta(T)/pi + 1`` zeros with ``0 < gamma <= T``."""
    return float(riemann_siegel_theta(torch.tensor([t], dtype=torch.float64, device="cpu"))[0]) / math.pi + 1


def _zeros_below(height: float) -> Tensor:
    """Every zero ``10 < gamma < height`` found by sign changes of ``Z`` on a grid of step
    ``_GRID_STEP``, refined by bisection. float64 ``[K]``, ascending."""
    grid = torch.arange(10.0, height, _GRID_STEP, dtype=torch.float64, device="cpu")
    values = torch.cat([hardy_z(part) for part in grid.split(4096)])
    change = (values[:-1] * values[1:]) < 0
    low, high = grid[:-1][change], grid[1:][change]
    low_value = values[:-1][change]
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2
        middle_value = hardy_z(middle)
        same = (middle_value * low_value) > 0
        low = torch.where(same, middle, low)
        low_value = torch.where(same, middle_value, low_value)
        high = torch.where(same, high, middle)
    return (low + high) / 2


@functools.lru_cache(maxsize=8)
def _computed_zeros(count: int) -> Tensor:
    height = max(ZETA_ZEROS_IMAG[-1], 20.0)
    while _zero_count_estimate(height) < count + 2:
        height *= 1.25
    found = _zeros_below(height)
    expected = _zero_count_estimate(height)
    if abs(found.numel() - expected) > 2.5 or found.numel() < count:  # pragma: no cover
        raise RuntimeError(
            f"found {found.numel()} zeta zeros below t={height:.1f}, Riemann-von Mangoldt expects "
            f"~{expected:.1f} (needed {count}): a pair closer than the grid step {_GRID_STEP}")
    return found[:count]


def zeta_zeros(count: int) -> Tensor:
    """``gamma_1 ... gamma_count`` as float64 ``[count]`` on the CPU: the table for the first
    100, computed with Hardy's Z beyond (cached per count)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a non-negative int, got {count!r}")
    table = torch.tensor(ZETA_ZEROS_IMAG[:count], dtype=torch.float64, device="cpu")
    if count <= len(ZETA_ZEROS_IMAG):
        return table
    computed = _computed_zeros(count)
    return torch.cat([table, computed[len(ZETA_ZEROS_IMAG):]])


def zeta_spectral_shifts(count: int, offset: int = 0, span: float = 1.0) -> Tensor:
    """Zeros ``gamma_{offset+1} ... gamma_{offset+count}`` mapped affinely onto
    ``[-span, span]`` (one zero: ``0``): the real parts of the spectral shifts ``z`` of the
    BK heads of one layer (layer ``l`` uses ``offset = l * count``). float64 ``[count]``."""
    gammas = zeta_zeros(offset + count)[offset:]
    if count == 1:
        return torch.zeros(1, dtype=torch.float64, device="cpu")
    return (2 * (gammas - gammas[0]) / (gammas[-1] - gammas[0]) - 1) * span


def zeta_frequencies(count: int) -> Tensor:
    """Angular frequencies ``omega_k = gamma_1 / gamma_k`` (radians per position; ``1`` down to
    ``~gamma_1 / gamma_count``) for the zeta position embedding. float64 ``[count]``."""
    gammas = zeta_zeros(count)
    return gammas[0] / gammas


def zeta_mode_basis(num_modes: int, dim: int, use_zeta: bool = True) -> Tensor:
    """Orthonormal rows ``[num_modes, dim]`` (float64, CPU): the resonance modes of a memory
    head. With ``use_zeta`` row ``m`` starts as ``cos(gamma_m / dim * (j + 1/2))`` over the
    channels ``j`` (irregular low frequencies) and the rows are orthonormalized by a CPU QR;
    without it they are the DCT-II rows ``1 .. num_modes`` (already orthonormal)."""
    if not 1 <= num_modes <= dim:
        raise ValueError(f"need 1 <= num_modes <= dim, got num_modes={num_modes}, dim={dim}")
    channel = torch.arange(dim, dtype=torch.float64, device="cpu") + 0.5
    if use_zeta:
        omega = zeta_zeros(num_modes) / dim
    else:
        omega = math.pi * torch.arange(1, num_modes + 1, dtype=torch.float64, device="cpu") / dim
    raw = torch.cos(omega[:, None] * channel[None, :])  # [M, dim]
    q, r = torch.linalg.qr(raw.T)  # CPU float64, [dim, M]
    signs = torch.sign(torch.diagonal(r))
    return (q * torch.where(signs == 0, 1.0, signs)[None, :]).T.contiguous()
