"""The physical unit of a vibration signal: part of the model contract.

A model's features are in the unit of the samples it was trained on: rms and
peak scale with it, the band energies with its square. A model trained in g
fed m/s^2 sees every amplitude 9.81 times too large and nothing crashes, so
the card records the unit (`vibration_core.modelcard_parts.Signal.unit`),
data files declare theirs (`METADATA_UNIT` in a parquet file's schema
metadata, or a flag where a tool takes one) and every consumer compares the
two.

Two units are accepted, both of acceleration, which is what the features are
defined on: ``g`` (standard gravity) and ``m/s^2``; ``m/s²`` and ``m/s2`` are
read as ``m/s^2``. Converting between them is one exact factor, 9.80665,
applied only where a policy says so (`vibration-infer validate
--convert-units`). Raw ADC counts are not a unit: integer samples need a
scale into one of these. Velocity (mm/s) and displacement (µm) are other
quantities whose spectra differ by powers of frequency: no factor converts
them, so they are refused.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

Unit = Literal["g", "m/s^2"]
UNITS: Final[tuple[Unit, ...]] = get_args(Unit)

STANDARD_GRAVITY: Final = 9.80665
"""m/s^2 per g, exact by definition (CGPM 1901)."""

METADATA_UNIT: Final = b"vibration.unit"
"""Parquet schema-metadata key: the unit of the samples (or of the samples the features came from)."""
METADATA_SCALE: Final = b"vibration.scale"
"""Parquet schema-metadata key: units per count for integer samples, one value for the whole file."""

_SPELLINGS: Final[dict[str, Unit]] = {"g": "g", "m/s^2": "m/s^2", "m/s²": "m/s^2", "m/s2": "m/s^2"}


def parse_unit(text: str) -> Unit | None:
    """The unit `text` names, or None when it is none of the accepted spellings."""
    return _SPELLINGS.get(text.strip())


def accepted() -> str:
    """The accepted spellings, for error messages."""
    return ", ".join(repr(name) for name in _SPELLINGS)


def factor(source: Unit, target: Unit) -> float:
    """What to multiply samples in `source` by to get `target` (1.0 for the same unit)."""
    if source == target:
        return 1.0
    return STANDARD_GRAVITY if source == "g" else 1.0 / STANDARD_GRAVITY
