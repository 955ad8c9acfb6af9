"""Run a loaded model over the node-local test data and hold it to its thresholds.

The test data is a parquet file of raw labelled windows, or a directory of
them (read by the core's dataset reader, which owns that format). Windows go
through the same path as in serving (`vibration_infer.loader.predict`: the
signal check against the card, the one extractor, the runtime), in batches.

Figures (numpy only, no scikit-learn in the image):

- accuracy over every window;
- recall, precision and F1 per class that has windows in the test data; a
  class of the card without test windows has no recall, and a recall
  threshold on it is a `TestDataError` (it cannot be checked);
- macro F1: the mean F1 over the classes present in the test data;
- latency per window (ms): each batch's wall time for extraction and
  inference divided by its rows; p50 and p99 over the batches, after one
  untimed warm-up batch (first-call allocations are not what serving sees).

Labels. A test label the card does not know is a `TestDataError` (exit 15)
that names the unknown labels: either the data is mislabelled or it holds a
class this model was never trained on, and in both cases the data cannot
judge the model. A recall threshold on a label the card lacks is a
`ContractMismatchError`: the policy asks the model for a class it lacks.

Units. Test data declares its unit (``vibration.unit`` in the parquet
schema metadata, `vibration_core.units`); data in another unit than the
card's is refused as a `TestDataError` naming both, or converted by the
exact g <-> m/s^2 factor where the settings say so (``--convert-units``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from vibration_core import dataset
from vibration_core.errors import ContractMismatchError, DatasetError, FeatureInputError
from vibration_core.gate import Figures
from vibration_core.units import METADATA_UNIT, Unit, factor
from vibration_infer.errors import BelowThresholdError, TestDataError
from vibration_infer.loader import predict

if TYPE_CHECKING:
    from pathlib import Path

    import numpy.typing as npt

    from vibration_core.gate import Policy, Verdict
    from vibration_core.modelcard import ModelCard
    from vibration_infer.loader import LoadedModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class TestData:
    """Labelled raw windows of one signal, possibly from several files."""

    __test__ = False  # a domain class, not a pytest test class

    source: str
    windows: npt.NDArray[np.float32]
    labels: npt.NDArray[np.str_]
    sample_rate: float
    files: int
    unit: Unit | None = None
    """What the files declare; None when they declare nothing."""


@dataclass(frozen=True)
class Evaluation:
    """What the model did on the test data."""

    samples: int
    accuracy: float
    macro_f1: float
    class_recall: dict[str, float]
    class_precision: dict[str, float]
    class_f1: dict[str, float]
    support: dict[str, int]
    confusion: list[list[int]]
    """Rows: true class, columns: predicted class, both in the card's label order."""
    p50_ms: float
    p99_ms: float
    batches: int
    seconds: float


def read_test_data(path: Path, *, max_mb: float | None = None) -> TestData:
    """Read a parquet file, or every ``*.parquet`` in a directory; raises `TestDataError`."""
    files = _test_files(path, max_mb)
    windows, labels, rates, units = [], [], set(), set()
    for file in files:
        try:
            part = dataset.read_windows(file)
        except DatasetError as exc:
            raise TestDataError(str(file), exc.detail) from exc
        if part.labels is None:
            raise TestDataError(str(file), "has no labels; validation needs labelled windows")
        windows.append(part.windows)
        labels.append(np.asarray(part.labels).astype(str))
        rates.add(float(part.sample_rate))
        units.add(part.unit)
    if len(rates) > 1 or len({w.shape[1] for w in windows}) > 1:
        raise TestDataError(str(path), "files differ in sample rate or window length")
    if len(units) > 1:
        shown = ", ".join(sorted(str(unit) for unit in units))
        raise TestDataError(str(path), f"files differ in the unit they declare ({shown})")
    data = TestData(
        str(path), np.concatenate(windows), np.concatenate(labels), rates.pop(), len(files), units.pop()
    )
    if data.labels.size == 0:
        raise TestDataError(str(path), "holds no windows")
    return data


def _test_files(path: Path, max_mb: float | None) -> list[Path]:
    """The parquet files at `path`, refused when together they are larger than `max_mb` MiB.

    Their windows are held in memory whole, about 4.5 times the files' size: the size is judged
    before a byte is read, instead of the pod being killed for its memory.
    """
    try:
        if not path.exists():
            raise TestDataError(str(path), "does not exist")
        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        size = sum(file.stat().st_size for file in files)
    except OSError as exc:  # a name too long, a permission: the path is unusable
        raise TestDataError(str(path), exc.strerror or type(exc).__name__) from None
    if not files:
        raise TestDataError(str(path), "is a directory without *.parquet files")
    if max_mb is not None and size > max_mb * (1 << 20):
        raise TestDataError(
            str(path),
            f"is {size / (1 << 20):.1f} MiB of parquet, more than max_test_data_mb ({max_mb:g} MiB): "
            "validation holds its windows in memory (about 4.5 times that), inside the pod's memory "
            "limit; keep fewer windows, or raise max_test_data_mb with the limit",
        )
    return files


def in_model_unit(data: TestData, card: ModelCard, *, convert: bool) -> TestData:
    """The test data in the card's unit: as it is, converted (when allowed), or refused."""
    wanted = card.signal.unit
    if data.unit == wanted:
        return data
    if data.unit is None:
        raise TestDataError(
            data.source,
            f"declares no unit (parquet schema metadata {METADATA_UNIT.decode()}); the model "
            f"{card.version} was trained on samples in {wanted}: write the files with that metadata",
        )
    if not convert:
        raise TestDataError(
            data.source,
            f"holds samples in {data.unit}, the model {card.version} was trained on samples in {wanted}; "
            "record the test data in the model's unit, or allow the exact conversion (--convert-units)",
        )
    logger.info(
        "test_data_converted", extra={"source": data.source, "from_unit": data.unit, "to_unit": wanted}
    )
    scaled = data.windows * np.float32(factor(data.unit, wanted))
    return dataclasses.replace(data, windows=scaled, unit=wanted)


def evaluate(model: LoadedModel, data: TestData, *, batch_size: int = 64) -> Evaluation:
    """Predict every test window and compute the figures."""
    card_labels = model.card.labels
    unknown = sorted(set(data.labels.tolist()) - set(card_labels))
    if unknown:
        raise TestDataError(
            data.source,
            f"holds labels the model {model.card.version} does not know: {unknown} "
            f"(its labels are {list(card_labels)}); relabel the data, or the model lacks these classes",
        )
    started = time.perf_counter()
    n = data.labels.size
    predicted = np.empty(n, dtype=np.intp)
    per_window_ms = []
    try:
        predict(model, data.windows[:batch_size], data.sample_rate)  # warm-up, untimed
        for start in range(0, n, batch_size):
            batch = data.windows[start : start + batch_size]
            t0 = time.perf_counter()
            predicted[start : start + batch.shape[0]] = predict(model, batch, data.sample_rate).indices
            per_window_ms.append((time.perf_counter() - t0) * 1000 / batch.shape[0])
    except FeatureInputError as exc:
        raise TestDataError(data.source, f"windows the extractor refuses: {exc.reason}") from exc
    index = {label: i for i, label in enumerate(card_labels)}
    truth = np.fromiter((index[label] for label in data.labels.tolist()), dtype=np.intp, count=n)
    evaluation = _figures(card_labels, truth, predicted, per_window_ms, time.perf_counter() - started)
    logger.info(
        "evaluated",
        extra={
            "samples": evaluation.samples,
            "accuracy": round(evaluation.accuracy, 4),
            "macro_f1": round(evaluation.macro_f1, 4),
            "p50_ms": round(evaluation.p50_ms, 4),
            "p99_ms": round(evaluation.p99_ms, 4),
        },
    )
    return evaluation


def _figures(
    labels: tuple[str, ...],
    truth: npt.NDArray[np.intp],
    predicted: npt.NDArray[np.intp],
    per_window_ms: list[float],
    seconds: float,
) -> Evaluation:
    k = len(labels)
    confusion = np.bincount(truth * k + predicted, minlength=k * k).reshape(k, k)
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted_count = confusion.sum(axis=0)
    present = support > 0
    recall = np.divide(tp, support, out=np.zeros(k), where=present)
    precision = np.divide(tp, predicted_count, out=np.zeros(k), where=predicted_count > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=precision + recall > 0)
    p50, p99 = np.percentile(np.asarray(per_window_ms), [50, 99])
    return Evaluation(
        samples=int(truth.size),
        accuracy=float(tp.sum() / truth.size),
        macro_f1=float(f1[present].mean()),
        class_recall={labels[i]: float(recall[i]) for i in range(k) if present[i]},
        class_precision={labels[i]: float(precision[i]) for i in range(k) if present[i]},
        class_f1={labels[i]: float(f1[i]) for i in range(k) if present[i]},
        support={labels[i]: int(support[i]) for i in range(k)},
        confusion=confusion.tolist(),
        p50_ms=float(p50),
        p99_ms=float(p99),
        batches=len(per_window_ms),
        seconds=seconds,
    )


def figures_of(evaluation: Evaluation, version: str | None) -> Figures:
    """The gate's view of an evaluation."""
    return Figures(
        version=version,
        accuracy=evaluation.accuracy,
        macro_f1=evaluation.macro_f1,
        class_recall=dict(evaluation.class_recall),
        p99_ms=evaluation.p99_ms,
    )


def check_policy_labels(policy: Policy, labels: tuple[str, ...], evaluation: Evaluation) -> None:
    """Refuse recall thresholds that cannot be checked: on a class the model or the data lacks."""
    missing = sorted(set(policy.min_class_recall) - set(labels))
    if missing:
        raise ContractMismatchError("labels", list(labels), sorted(policy.min_class_recall))
    for label in sorted(policy.min_class_recall):
        if label not in evaluation.class_recall:
            raise TestDataError(
                "min_class_recall", f"the test data has no {label} windows to check its recall"
            )


def check_verdict(verdict: Verdict) -> None:
    """Raise `BelowThresholdError` listing every failed check, unless the verdict passed."""
    if not verdict.passed:
        raise BelowThresholdError(verdict.failures(), reason_code=verdict.reason)
