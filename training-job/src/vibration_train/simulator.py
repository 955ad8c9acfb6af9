"""Physics-based raw accelerometer windows of rotating machines in four states.

Demos, tests and the calibration of the training pipeline need labelled raw
windows; this module synthesises them from a small machine model, one
accelerometer axis, in g:

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
overlap the way field data does. The random draws come from independent
streams in a fixed order, so a `Drift` changes only what it names: the same
seed with and without a speed shift gives the same machines, labels, phases
and noise.

Longer than the others: it is one physical model of the four conditions
(shaft, bearing, sensor, noise, drifts) whose parts share its parameters; used
only by training, tests and tools, it ships in the training image alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, NamedTuple

import numpy as np
import numpy.typing as npt

from vibration_core.errors import FeatureInputError, SimulationParameterError
from vibration_core.features import band_bins
from vibration_core.fft import rfft

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from vibration_core.units import Unit

CLASSES: Final = ("normal", "imbalance", "misalignment", "bearing_fault")
UNIT: Final[Unit] = "g"
"""The unit of every simulated sample."""
_IMBALANCE, _MISALIGNMENT, _BEARING_FAULT = 1, 2, 3  # indices into CLASSES
DEFAULT_START: Final = datetime(2025, 1, 1, tzinfo=UTC)

_REF_HZ: Final = 40.0  # shaft rate at which amplitudes are stated
_HEALTHY_SHAPE: Final = (1.0, 0.3, 0.08, 0.03, 0.0, 0.0)  # 1x..6x of a sound machine
_MISALIGNMENT_SHAPE: Final = (0.35, 1.0, 0.45, 0.2, 0.1, 0.05)
# Log-uniform severity ranges in g at _REF_HZ, by class index; the low ends
# sit at or below a healthy machine's own 1x and noise (see tools/calibrate.py).
_SEVERITY: Final = {_IMBALANCE: (0.06, 0.7), _MISALIGNMENT: (0.045, 0.45), _BEARING_FAULT: (0.045, 1.5)}
# Windows per synthesis block: its arrays then stay in the L2 cache, which is
# worth more than the per-block call overhead.
_BLOCK: Final = 16
# The shifted population is what `Drift.new_machine` draws from: faster
# shafts, bearings with more balls, resonances up to and past the top of the
# high band (10 kHz), other sensors on noisier mounts.
_POPULATIONS: Final = {  # (low, high) per field: (training, shifted)
    "shaft": ((20, 60), (45, 75)),
    "balls": ((7, 16), (14, 24)),
    "res": ((2e3, 8e3), (7e3, 11e3)),
    "gain": ((0.85, 1.15), (0.6, 1.5)),
    "noise": ((4e-3, 12e-3), (8e-3, 25e-3)),
}

FloatArray = npt.NDArray[np.float64]


class _Timing(NamedTuple):
    sample_rate: float
    window_length: int
    start: datetime
    period_s: float


def bpfo(shaft_hz: float, n_balls: int, ball_d: float, pitch_d: float, contact_deg: float) -> float:
    """Ball pass frequency of the outer race, ``Nb/2 * fr * (1 - d/D * cos(phi))``."""
    return n_balls / 2 * shaft_hz * (1 - ball_d / pitch_d * math.cos(math.radians(contact_deg)))


def bpfi(shaft_hz: float, n_balls: int, ball_d: float, pitch_d: float, contact_deg: float) -> float:
    """Ball pass frequency of the inner race, ``Nb/2 * fr * (1 + d/D * cos(phi))``."""
    return n_balls / 2 * shaft_hz * (1 + ball_d / pitch_d * math.cos(math.radians(contact_deg)))


@dataclass(frozen=True)
class MachineProfile:
    """One machine: its running point, bearing, structure and sensor."""

    id: str
    shaft_hz: float
    """Nominal shaft rate (1x), Hz."""
    load: float
    """Share of rated load, 0-1: raises noise, misalignment and impact forces."""
    n_balls: int
    ball_diameter_mm: float
    pitch_diameter_mm: float
    contact_angle_deg: float
    resonance_hz: float
    """Structural resonance that bearing impacts ring."""
    damping_ratio: float
    residual_g: float
    """A healthy machine's 1x amplitude at 40 Hz shaft rate, g."""
    sensor_gain: float
    noise_level: float
    """Broadband noise floor, g rms."""

    def __post_init__(self) -> None:
        """Refuse a machine that cannot turn or a bearing that cannot exist."""
        if not self.shaft_hz > 0:
            raise SimulationParameterError(f"{self.id}.shaft_hz", f"must be > 0, got {self.shaft_hz!r}")
        if not 0 < self.ball_diameter_mm < self.pitch_diameter_mm:
            raise SimulationParameterError(f"{self.id}.ball_diameter_mm", "must be in (0, pitch_diameter_mm)")
        if self.n_balls < 3 or not 0 <= self.contact_angle_deg < 90:  # noqa: PLR2004 - a bearing's limits
            raise SimulationParameterError(f"{self.id}.n_balls", "a bearing has >= 3 balls, a 0-90 deg angle")

    @property
    def bpfo_hz(self) -> float:
        """Outer-race defect rate at the nominal shaft rate, Hz."""
        return bpfo(self.shaft_hz, self.n_balls, *self._bearing)

    @property
    def bpfi_hz(self) -> float:
        """Inner-race defect rate at the nominal shaft rate, Hz."""
        return bpfi(self.shaft_hz, self.n_balls, *self._bearing)

    @property
    def _bearing(self) -> tuple[float, float, float]:
        return self.ball_diameter_mm, self.pitch_diameter_mm, self.contact_angle_deg


@dataclass(frozen=True)
class Drift:
    """What changed between the data a model was trained on and what it sees now."""

    speed_shift: float = 0.0
    """Relative shaft-speed change: 0.15 runs every shaft 15 % faster."""
    gain_change: float = 0.0
    """Relative sensor-gain change: -0.2 reads 20 % low."""
    noise_scale: float = 1.0
    """Multiplier of the broadband noise, >= 0."""
    new_machine: bool = False
    """Draw the machines from a population the training never saw."""

    def __post_init__(self) -> None:
        """Refuse knobs that leave physics (a stopped shaft, a negative gain)."""
        for name, value, low in (
            ("speed_shift", self.speed_shift, -0.9),
            ("gain_change", self.gain_change, -0.99),
        ):
            if not (math.isfinite(value) and value >= low):
                raise SimulationParameterError(f"drift.{name}", f"must be a number >= {low}, got {value!r}")
        if not (math.isfinite(self.noise_scale) and self.noise_scale >= 0):
            raise SimulationParameterError("drift.noise_scale", f"must be >= 0, got {self.noise_scale!r}")


@dataclass(frozen=True, eq=False)
class SimulatedData:
    """Labelled windows, one row per window; the arrays are read-only."""

    machine: npt.NDArray[np.str_]
    timestamp_ns: npt.NDArray[np.int64]
    """Window start, ns since the Unix epoch (UTC)."""
    sample_rate: float
    windows: npt.NDArray[np.float32]
    """``(n, window_length)``, C-contiguous, in g."""
    labels: npt.NDArray[np.str_]
    machines: tuple[MachineProfile, ...] = ()
    """The profiles the windows came from."""

    def __len__(self) -> int:
        return int(self.windows.shape[0])


def make_machines(n: int, rng: np.random.Generator, *, shifted: bool = False) -> tuple[MachineProfile, ...]:
    """Draw `n` machines from the training population, or from the shifted one."""
    if n < 1:
        raise SimulationParameterError("machines", f"must be at least 1, got {n}")
    pop = {field: ranges[shifted] for field, ranges in _POPULATIONS.items()}
    machines = []
    for i in range(n):
        pitch = float(rng.uniform(30, 120))
        machines.append(
            MachineProfile(
                id=f"machine-{'new-' if shifted else ''}{i:02d}",
                shaft_hz=float(rng.uniform(*pop["shaft"])),
                load=float(rng.uniform(0.3, 1.0)),
                n_balls=int(rng.integers(int(pop["balls"][0]), int(pop["balls"][1]), endpoint=True)),
                ball_diameter_mm=pitch * float(rng.uniform(0.15, 0.25)),
                pitch_diameter_mm=pitch,
                contact_angle_deg=float(rng.choice([0.0, 0.0, 15.0, 25.0])),
                resonance_hz=float(rng.uniform(*pop["res"])),
                damping_ratio=float(rng.uniform(0.03, 0.08)),
                residual_g=float(rng.uniform(0.02, 0.06)),
                sensor_gain=float(rng.uniform(*pop["gain"])),
                noise_level=float(rng.uniform(*pop["noise"])),
            )
        )
    return tuple(machines)


def simulate(
    n_windows: int,
    *,
    seed: int,
    sample_rate: float = 25600.0,
    window_length: int = 4096,
    machines: int | Sequence[MachineProfile] = 8,
    class_shares: Mapping[str, float] | None = None,
    drift: Drift | None = None,
    start: datetime = DEFAULT_START,
    window_period_s: float = 1.0,
) -> SimulatedData:
    """Simulate `n_windows` labelled windows spread round-robin over the machines.

    Window ``i`` belongs to machine ``i % m`` and starts ``i // m`` window
    periods after `start`. The labels follow `class_shares` (equal by
    default) exactly up to rounding, in random order. Same arguments, same bytes.
    """
    if n_windows < 1:
        raise SimulationParameterError("n_windows", f"must be at least 1, got {n_windows}")
    drift = drift or Drift()
    streams = np.random.default_rng(seed).spawn(3)
    if isinstance(machines, int):
        profiles = make_machines(machines, streams[0], shifted=drift.new_machine)
    elif not machines or drift.new_machine:
        detail = "draws new machines: pass machines as a count" if machines else "needs at least one profile"
        raise SimulationParameterError("drift.new_machine" if machines else "machines", detail)
    else:
        profiles = tuple(machines)
    counts = _class_counts(n_windows, class_shares)
    labels = streams[1].permutation(np.repeat(np.arange(len(CLASSES)), counts))
    timing = _Timing(sample_rate, window_length, start, window_period_s)
    return _labelled(profiles, labels, streams[2], drift, timing)


def simulate_machine_stream(
    profile: MachineProfile,
    labels: Sequence[str],
    *,
    seed: int,
    sample_rate: float = 25600.0,
    window_length: int = 4096,
    drift: Drift | None = None,
    start: datetime = DEFAULT_START,
    window_period_s: float = 1.0,
) -> SimulatedData:
    """Simulate consecutive windows of one machine, one per entry of `labels`.

    For demos that script a machine's life, e.g. ``["normal"] * 50 + ["bearing_fault"] * 10``.
    """
    unknown = sorted(set(labels) - set(CLASSES))
    if not labels or unknown:
        raise SimulationParameterError("labels", f"must be a non-empty list of {CLASSES}, unknown: {unknown}")
    drift = drift or Drift()
    if drift.new_machine:
        raise SimulationParameterError("drift.new_machine", "does not apply to a given profile")
    label_idx = np.array([CLASSES.index(label) for label in labels])
    timing = _Timing(sample_rate, window_length, start, window_period_s)
    return _labelled((profile,), label_idx, np.random.default_rng(seed), drift, timing)


def _labelled(
    profiles: tuple[MachineProfile, ...],
    labels: npt.NDArray[np.int_],
    rng: np.random.Generator,
    drift: Drift,
    timing: _Timing,
) -> SimulatedData:
    # Window i belongs to machine i % m and starts (i // m) periods after start.
    sample_rate, window_length, start, period_s = timing
    _check_sampling(sample_rate, window_length)
    steps = np.arange(labels.size)
    stamps = _timestamps(start, period_s, steps // len(profiles))
    machine_idx = steps % len(profiles)
    windows = _synthesise(profiles, machine_idx, labels, rng, drift, sample_rate, window_length)
    machine, names = np.array([p.id for p in profiles])[machine_idx], np.array(CLASSES)[labels]
    for array in (machine, stamps, windows, names):
        array.setflags(write=False)
    return SimulatedData(machine, stamps, float(sample_rate), windows, names, profiles)


def _class_counts(n: int, shares: Mapping[str, float] | None) -> npt.NDArray[np.int_]:
    shares = dict.fromkeys(CLASSES, 1.0) if shares is None else shares
    unknown = sorted(set(shares) - set(CLASSES))
    if unknown:
        raise SimulationParameterError("class_shares", f"unknown classes {unknown}; known: {list(CLASSES)}")
    weights = np.array([float(shares.get(c, 0.0)) for c in CLASSES])
    if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise SimulationParameterError(
            "class_shares", f"must be finite, >= 0 and sum > 0, got {dict(shares)}"
        )
    # Largest remainder: the counts add up to n and follow the shares closely.
    exact = weights / weights.sum() * n
    counts: npt.NDArray[np.int_] = np.floor(exact).astype(int)
    counts[np.argsort(counts - exact, kind="stable")[: n - counts.sum()]] += 1
    return counts


def _timestamps(start: datetime, period_s: float, steps: npt.NDArray[np.int_]) -> npt.NDArray[np.int64]:
    if start.tzinfo is None:
        raise SimulationParameterError("start", "must be timezone-aware (UTC), got a naive datetime")
    if not (math.isfinite(period_s) and period_s > 0):
        raise SimulationParameterError("window_period_s", f"must be > 0, got {period_s!r}")
    delta = start - datetime(1970, 1, 1, tzinfo=UTC)
    start_ns = (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000
    return start_ns + steps.astype(np.int64) * round(period_s * 1e9)


def _check_sampling(sample_rate: float, window_length: int) -> None:
    if not (math.isfinite(sample_rate) and sample_rate > 4000):  # noqa: PLR2004 - Nyquist above the high band's 2 kHz
        raise SimulationParameterError("sample_rate", f"must be > 4000 Hz, got {sample_rate!r}")
    try:
        band_bins(window_length, sample_rate)
    except FeatureInputError as exc:
        raise SimulationParameterError("window_length", exc.reason) from None


def _synthesise(  # noqa: PLR0917 - internal, called once
    profiles: tuple[MachineProfile, ...],
    machine_idx: npt.NDArray[np.intp],
    labels: npt.NDArray[np.int_],
    rng: np.random.Generator,
    drift: Drift,
    sample_rate: float,
    window_length: int,
) -> npt.NDArray[np.float32]:
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
