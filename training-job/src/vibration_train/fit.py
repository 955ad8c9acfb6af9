"""Fit the gradient-boosting classifier and measure it on a held-out split.

The split is stratified (every class keeps its share in both parts) and
seeded, the estimator is trained on the string labels so that its ONNX form
emits a string label tensor, and the held-out figures are computed once here
as a `vibration_core.modelcard.Metrics`: the printed report and the model
card both read that one object.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
from sklearn.model_selection import train_test_split

from vibration_core.modelcard import ClassMetrics, Metrics
from vibration_train.errors import FitConfigError, TrainingDataError

if TYPE_CHECKING:
    from collections.abc import Callable

    from vibration_train.data import TrainingTable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitConfig:
    """Hyper-parameters of the classifier and of the split.

    The defaults are the reference pipeline's.
    """

    n_estimators: int = 150
    """Boosting stages; each stage grows one tree per class."""
    max_depth: int = 5
    """Depth of every tree."""
    learning_rate: float = 0.1
    """Shrinkage applied to each tree's contribution."""
    random_state: int = 42
    """Seed of the split and of the estimator."""
    test_size: float = 0.2
    """Share of the windows held out for the metrics and the parity check."""

    def __post_init__(self) -> None:
        """Refuse values scikit-learn would refuse later, with the flag's name."""
        if self.n_estimators < 1:
            raise FitConfigError("n_estimators", f"must be >= 1, got {self.n_estimators}")
        if self.max_depth < 1:
            raise FitConfigError("max_depth", f"must be >= 1, got {self.max_depth}")
        if not self.learning_rate > 0:
            raise FitConfigError("learning_rate", f"must be > 0, got {self.learning_rate}")
        if not 0 < self.test_size < 1:
            raise FitConfigError("test_size", f"must lie in (0, 1), got {self.test_size}")

    def as_hyperparameters(self) -> dict[str, str | int | float | bool | None]:
        """Return the settings as the model card records them."""
        return {"estimator": "GradientBoostingClassifier", "split": "stratified", **asdict(self)}


@dataclass(frozen=True, eq=False)
class FitResult:
    """A fitted estimator, its split and its held-out figures."""

    estimator: GradientBoostingClassifier
    labels: tuple[str, ...]
    """`estimator.classes_` as strings: the model's output order."""
    x_train: npt.NDArray[np.float32]
    x_test: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.str_]
    y_test: npt.NDArray[np.str_]
    predictions: npt.NDArray[np.str_]
    """The estimator's labels for `x_test`."""
    metrics: Metrics
    seconds: float
    """Wall time of the estimator's fit."""


def fit(
    table: TrainingTable,
    config: FitConfig,
    *,
    on_stage: Callable[[int, int], None] | None = None,
) -> FitResult:
    """Split `table`, fit the classifier on the training part, measure it on the rest.

    `on_stage(done, total)` is called after every boosting stage (for a
    progress bar); it cannot stop the fit.
    """
    x_train, x_test, y_train, y_test = _split(table, config)
    estimator = GradientBoostingClassifier(
        n_estimators=config.n_estimators,
        max_depth=config.max_depth,
        learning_rate=config.learning_rate,
        random_state=config.random_state,
    )

    def monitor(stage: int, _estimator: object, _locals: dict[str, Any]) -> bool:
        if on_stage is not None:
            on_stage(stage + 1, config.n_estimators)
        return False  # never stop early: the card records n_estimators as trained

    started = time.perf_counter()
    estimator.fit(x_train, y_train, monitor=monitor)
    seconds = time.perf_counter() - started
    labels = tuple(str(label) for label in estimator.classes_)
    predictions = np.asarray(estimator.predict(x_test)).astype(str)
    metrics = compute_metrics(y_test, predictions, labels)
    logger.info(
        "model_fitted train=%d test=%d seconds=%.2f accuracy=%.4f macro_f1=%.4f",
        y_train.size,
        y_test.size,
        seconds,
        metrics.accuracy,
        metrics.macro_f1,
    )
    return FitResult(estimator, labels, x_train, x_test, y_train, y_test, predictions, metrics, seconds)


def compute_metrics(
    y_true: npt.NDArray[np.str_], y_pred: npt.NDArray[np.str_], labels: tuple[str, ...]
) -> Metrics:
    """Per-class precision, recall, F1 and support, accuracy, macro and weighted F1.

    The definitions are scikit-learn's `classification_report`; a class that
    is never predicted gets precision 0 (``zero_division=0``).
    """
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=list(labels), zero_division=0
    )
    per_class = {
        label: ClassMetrics(
            precision=float(precision[i]), recall=float(recall[i]), f1=float(f1[i]), support=int(support[i])
        )
        for i, label in enumerate(labels)
    }
    total = int(np.sum(support))
    return Metrics(
        accuracy=float(accuracy_score(y_true, y_pred)),
        macro_f1=float(np.mean(f1)),
        weighted_f1=float(np.sum(f1 * support) / total),
        per_class=per_class,
        test_samples=total,
    )


def _split(
    table: TrainingTable, config: FitConfig
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.str_], npt.NDArray[np.str_]]:
    n_classes = len(set(table.labels.tolist()))
    n_test = int(np.ceil(config.test_size * table.labels.size))
    n_train = table.labels.size - n_test
    # A stratified split puts at least one window of every class on each side.
    if min(n_test, n_train) < n_classes:
        raise TrainingDataError(
            "split",
            f"{table.labels.size} windows with test_size {config.test_size:g} give {n_train} training and "
            f"{n_test} test windows; a stratified split of {n_classes} classes needs at least "
            f"{n_classes} on each side",
        )
    parts = train_test_split(
        table.features,
        table.labels,
        test_size=config.test_size,
        stratify=table.labels,
        random_state=config.random_state,
    )
    x_train, x_test, y_train, y_test = (np.asarray(part) for part in parts)
    return x_train, x_test, y_train, y_test
