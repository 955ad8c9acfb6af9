"""Labelled raw accelerometer windows of simulated rotating machines, from a seed.

Demos, tests and the calibration of the training pipeline need labelled raw
windows. This module is the simulator's interface: the machines it models
(`MachineProfile`, drawn by `make_machines` from the training population or
a shifted one), the `Drift` knobs, and the assembly of a `SimulatedData`
set: labels in the requested shares and random order, windows spread
round-robin over the machines, their timestamps. The samples themselves come
from the signal model, `vibration_train.simulator_signals`.

The random draws come from independent streams in a fixed order (machines,
labels, signals), so a `Drift` changes only what it names: the same seed
with and without a speed shift gives the same machines, labels, phases and
noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, NamedTuple

import numpy as np

from vibration_core.errors import FeatureInputError, SimulationParameterError
from vibration_core.features import band_bins
from vibration_train.simulator_signals import bpfi, bpfo, synthesise

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import numpy.typing as npt

    from vibration_core.units import Unit

CLASSES: Final = ("normal", "imbalance", "misalignment", "bearing_fault")
UNIT: Final[Unit] = "g"
"""The unit of every simulated sample."""
DEFAULT_START: Final = datetime(2025, 1, 1, tzinfo=UTC)

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


class _Timing(NamedTuple):
    sample_rate: float
    window_length: int
    start: datetime
    period_s: float


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
    windows = synthesise(profiles, machine_idx, labels, rng, drift, sample_rate, window_length)
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
