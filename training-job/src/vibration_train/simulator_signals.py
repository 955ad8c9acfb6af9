"""The simulator's signal model: one accelerometer axis, in g, for each of the four conditions.

The machines, the labels and the timing come from `vibration_train.simulator`;
this module turns them into samples:

- every state: the shaft's 1x-4x from residual imbalance and alignment,
  coloured broadband noise (a white floor, some low-frequency content, the
  structure's resonance excited by random forces) and a per-machine gain;
- ``imbalance`` grows the 1x component;
- ``misalignment`` adds harmonics, 2x dominant, with some 1x and 3x-6x,
  growing with load;
- ``bearing_fault`` adds impacts at the outer- or inner-race defect rate
  (`bpfo`, `bpfi`), each ringing the machine's structural resonance with an
  exponential decay, with 0.5-2 % timing jitter (slip) and, for an inner
  race, amplitude modulated by the shaft rotation.

Shaft-rate amplitudes grow in proportion to shaft speed (a vibration
*velocity* is what severity charts hold constant). Fault severities are
drawn log-uniformly from ranges whose low ends hide in a healthy machine's
own vibration, and the noise of some healthy windows is high, so the classes
overlap the way field data does.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from vibration_core.fft import rfft

if TYPE_CHECKING:
    from vibration_train.simulator import Drift, MachineProfile

_IMBALANCE, _MISALIGNMENT, _BEARING_FAULT = 1, 2, 3  # indices into vibration_train.simulator.CLASSES

_REF_HZ: Final = 40.0  # shaft rate at which amplitudes are stated
_HEALTHY_SHAPE: Final = (1.0, 0.3, 0.08, 0.03, 0.0, 0.0)  # 1x..6x of a sound machine
_MISALIGNMENT_SHAPE: Final = (0.35, 1.0, 0.45, 0.2, 0.1, 0.05)
# Log-uniform severity ranges in g at _REF_HZ, by class index; the low ends
# sit at or below a healthy machine's own 1x and noise (see tools/calibrate.py).
_SEVERITY: Final = {_IMBALANCE: (0.06, 0.7), _MISALIGNMENT: (0.045, 0.45), _BEARING_FAULT: (0.045, 1.5)}
# Windows per synthesis block: its arrays then stay in the L2 cache, which is
# worth more than the per-block call overhead.
_BLOCK: Final = 16

FloatArray = npt.NDArray[np.float64]


def bpfo(shaft_hz: float, n_balls: int, ball_d: float, pitch_d: float, contact_deg: float) -> float:
    """Ball pass frequency of the outer race, ``Nb/2 * fr * (1 - d/D * cos(phi))``."""
    return n_balls / 2 * shaft_hz * (1 - ball_d / pitch_d * math.cos(math.radians(contact_deg)))


def bpfi(shaft_hz: float, n_balls: int, ball_d: float, pitch_d: float, contact_deg: float) -> float:
    """Ball pass frequency of the inner race, ``Nb/2 * fr * (1 + d/D * cos(phi))``."""
    return n_balls / 2 * shaft_hz * (1 + ball_d / pitch_d * math.cos(math.radians(contact_deg)))


def synthesise(  # noqa: PLR0917 - called once, by the simulator
    profiles: tuple[MachineProfile, ...],
    machine_idx: npt.NDArray[np.intp],
    labels: npt.NDArray[np.int_],
    rng: np.random.Generator,
    drift: Drift,
    sample_rate: float,
    window_length: int,
) -> npt.NDArray[np.float32]:
    """Return ``(n, window_length)`` float32 windows, C-contiguous, in g.

    Window ``i`` is of machine ``profiles[machine_idx[i]]`` in class ``labels[i]`` (an index into
    `vibration_train.simulator.CLASSES`).
    """
    n = machine_idx.size

    def per_window(name: str) -> FloatArray:
        return np.array([float(getattr(p, name)) for p in profiles])[machine_idx]

    # Every draw is made for every window whatever its class, so the draws
    # (and the windows) stay paired across drift settings.
    fr = per_window("shaft_hz") * (1 + drift.speed_shift) * (1 + 0.01 * rng.standard_normal(n))
    load = np.clip(per_window("load") + 0.05 * rng.standard_normal(n), 0.1, 1.2)
    q = fr / _REF_HZ
    amps = (
        (per_window("residual_g") * q)[:, None] * np.exp(0.25 * rng.standard_normal((n, 6))) * _HEALTHY_SHAPE
    )
    severity = np.zeros(n)
    for cls, (lo, hi) in _SEVERITY.items():
        severity[labels == cls] = lo * (hi / lo) ** rng.random(n)[labels == cls]
    amps[:, 0] += np.where(labels == _IMBALANCE, severity * q, 0.0)
    amps += np.where(labels == _MISALIGNMENT, severity * q * (0.5 + load), 0.0)[:, None] * _MISALIGNMENT_SHAPE
    inner = rng.random(n) < 0.5  # noqa: PLR2004 - either race equally likely
    ratio = per_window("ball_diameter_mm") / per_window("pitch_diameter_mm")
    ratio *= np.cos(np.radians(per_window("contact_angle_deg")))
    p = {
        "fr": fr,
        "impact": np.where(labels == _BEARING_FAULT, severity * q * (0.6 + 0.4 * load), 0.0),
        "defect_hz": per_window("n_balls") / 2 * fr * (1 + np.where(inner, ratio, -ratio)),
        "inner": inner.astype(float),
        "sigma": per_window("noise_level") * (0.7 + 0.6 * load) * np.exp(0.3 * rng.standard_normal(n)),
        "lf": rng.uniform(0.5, 3.0, n),
        "lf_hz": rng.uniform(15, 40, n),
        "hump": rng.uniform(1.0, 4.0, n),
        "fn": per_window("resonance_hz") * (1 + 0.02 * rng.standard_normal(n)),
        "zeta": per_window("damping_ratio"),
        "gain": per_window("sensor_gain") * (1 + drift.gain_change),
        "slip": rng.uniform(0.005, 0.02, n),
        "depth": rng.uniform(0.4, 0.9, n),
    }
    p["sigma"] *= drift.noise_scale
    phases = rng.uniform(0, 2 * np.pi, (n, 7))
    # The impacts draw from their own stream: how many they draw depends on
    # the shaft speed, and the noise must not shift with it.
    rngs = rng.spawn(2)
    out = np.empty((n, window_length), dtype=np.float32)
    for s in range(0, n, _BLOCK):
        block = slice(s, s + _BLOCK)
        sub = {k: v[block] for k, v in p.items()}
        _block(sub, amps[block], phases[block], rngs, fs=sample_rate, out=out[block])
    return out


def _block(
    p: dict[str, FloatArray],
    amps: FloatArray,
    phases: FloatArray,
    rngs: list[np.random.Generator],
    *,
    fs: float,
    out: npt.NDArray[np.float32],
) -> None:
    b, length = out.shape
    f = np.fft.rfftfreq(length, 1 / fs).astype(np.float32)
    c = {k: v.astype(np.float32)[:, None] for k, v in p.items()}
    # The noise is made as a spectrum: one inverse FFT gives the white floor,
    # the low-frequency content and the resonance hump, and the impacts join
    # the same spectrum.
    x2 = np.square(f / c["fn"])
    z2 = 4 * c["zeta"] ** 2
    power = (
        1
        + c["lf"] ** 2 / (1 + np.square(f / c["lf_hz"]))
        + c["hump"] ** 2 * z2 / (np.square(1 - x2) + z2 * x2)
    )
    # Complex Gaussian bins by Box-Muller (Rayleigh magnitude, uniform phase):
    # float32 uniforms and SIMD ufuncs are several times faster than numpy's
    # normals, whose float32 path is slower still than its float64 one.
    u = rngs[0].random((2, b, f.size), dtype=np.float32)
    magnitude = np.sqrt(np.float32(-length) * np.log1p(-u[0]) * power) * c["sigma"]
    u[1] *= np.float32(2 * np.pi)
    spectrum = np.empty((b, f.size), dtype=np.complex64)
    np.multiply(magnitude, np.cos(u[1]), out=spectrum.real)
    np.multiply(magnitude, np.sin(u[1]), out=spectrum.imag)
    spectrum[:, 0] = 0  # accelerometers are AC-coupled
    rows = np.flatnonzero(p["impact"] > 0)
    if rows.size:
        spectrum[rows] += _impacts(
            {k: v[rows] for k, v in p.items()}, phases[rows, -1], rngs[1], fs=fs, length=length, f=f
        )
    # numpy >= 2 transforms complex64 in single precision; its stubs only know float64.
    np.fft.irfft(spectrum, n=length, axis=1, out=out)  # type: ignore[arg-type]
    theta = (2 * np.pi * c["fr"]) * (np.arange(length, dtype=np.float32) / np.float32(fs))
    harmonic = np.empty_like(out)
    for k in range(amps.shape[1]):
        np.multiply(theta, np.float32(k + 1), out=harmonic)
        harmonic += phases[:, k, None].astype(np.float32)
        np.sin(harmonic, out=harmonic)
        harmonic *= amps[:, k, None].astype(np.float32)
        out += harmonic
    out *= c["gain"]


def _impacts(
    p: dict[str, FloatArray],
    rotation_phase: FloatArray,
    rng: np.random.Generator,
    *,
    fs: float,
    length: int,
    f: npt.NDArray[np.float32],
) -> npt.NDArray[np.complex64]:
    # An impulse train at the defect rate, jittered by slip, convolved with a
    # damped sine at the resonance through the FFT. The convolution is
    # circular on purpose: the ringing of the last impacts wraps to the start
    # as the ringing of impacts just before the window would.
    b = p["fr"].size
    duration = length / fs
    k = np.arange(math.ceil(duration * float(p["defect_hz"].max())) + 2)
    jitter = p["slip"][:, None] * rng.standard_normal((b, k.size))
    t = (rng.random((b, 1)) + k + jitter) / p["defect_hz"][:, None]
    # An inner-race defect passes through the load zone once per turn.
    turn = np.cos(2 * np.pi * p["fr"][:, None] * t + rotation_phase[:, None])
    weights = p["impact"][:, None] * (1 + p["inner"][:, None] * p["depth"][:, None] * turn)
    weights *= np.exp(0.2 * rng.standard_normal(t.shape)) * ((t >= 0) & (t < duration))
    index = np.clip((t * fs).astype(np.int64), 0, length - 1) + np.arange(b)[:, None] * length
    train = np.bincount(index.ravel(), weights=weights.ravel(), minlength=b * length).reshape(b, length)
    # The sampled h(t) = exp(-a t) sin(wd t) has the DFT fs * wd / ((a + i w)^2 + wd^2).
    wn = 2 * np.pi * p["fn"][:, None]
    a = (p["zeta"][:, None] * wn).astype(np.float32)
    wd = (wn * np.sqrt(1 - p["zeta"][:, None] ** 2)).astype(np.float32)
    w = np.float32(2 * np.pi) * f
    denominator = np.empty((b, f.size), dtype=np.complex64)
    denominator.real = a**2 + wd**2 - w**2
    denominator.imag = 2 * a * w
    spectrum = rfft(np.ascontiguousarray(train, dtype=np.float32))
    spectrum *= np.float32(fs) * wd / denominator
    return spectrum
