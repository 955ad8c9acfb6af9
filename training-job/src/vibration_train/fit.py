"""Fit the gradient-boosting classifier and measure it on a held-out split.

The split (`vibration_train.split`) holds out whole machines, or each
recording's latest windows, never windows one by one; it is seeded. The
estimator is trained on the string labels so that its ONNX form emits a
string label tensor, and the held-out figures are computed once here as a
`vibration_core.modelcard_parts.Metrics`: the printed report and the model
card both read that one object. Beside the per-window figures it holds the
per-recording accuracy: whether the model names a machine's state right
when all of that state's held-out windows vote.
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

from vibration_core.modelcard_parts import ClassMetrics, HeldOut, Metrics
from vibration_train.errors import FitConfigError
from vibration_train.split import Split, machine_of_each_window, recording_ids, split_table

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
    """Seed of the split (it orders equally good machines) and of the estimator."""
    test_size: float = 0.2
    """Share of the windows held out for the metrics and the parity check, per class, as near as
    whole machines (or whole windows of each recording) allow."""

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
        return {"estimator": "GradientBoostingClassifier", **asdict(self)}


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
    split: Split
    """Which rows of the table `x_train` and `x_test` are, and why."""
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
    split = split_table(table, config.test_size, config.random_state)
    x_train, x_test, y_train, y_test = split.parts(table)
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
    metrics = compute_metrics(table, split, predictions, labels)
    logger.info(
        "model_fitted",
        extra={
            "split": split.kind,
            "train": y_train.size,
            "test": y_test.size,
            "seconds": round(seconds, 2),
            "accuracy": round(metrics.accuracy, 4),
            "macro_f1": round(metrics.macro_f1, 4),
        },
    )
    return FitResult(
        estimator, labels, x_train, x_test, y_train, y_test, predictions, split, metrics, seconds
    )


def compute_metrics(
    table: TrainingTable, split: Split, y_pred: npt.NDArray[np.str_], labels: tuple[str, ...]
) -> Metrics:
    """The held-out figures of predictions `y_pred` for the rows `split.test` of `table`.

    Per class precision, recall, F1 and support, accuracy, macro and
    weighted F1 are scikit-learn's `classification_report` definitions (a
    class that is never predicted gets precision 0, ``zero_division=0``);
    then how the split was made and the per-recording accuracy.
    """
    y_true = table.labels[split.test]
    machines = machine_of_each_window(table)[split.test]
    right, recordings = recording_accuracy(recording_ids(machines, y_true), y_true, y_pred)
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
        held_out=HeldOut(
            split=split.kind,
            machines=split.held_out_machines,
            recordings=recordings,
            recording_accuracy=right,
        ),
    )


def recording_accuracy(
    recordings: npt.NDArray[np.intp], y_true: npt.NDArray[np.str_], y_pred: npt.NDArray[np.str_]
) -> tuple[float, int]:
    """Share of recordings whose majority prediction is their label, and how many recordings.

    `recordings` numbers each window's recording (`recording_ids`); all
    windows of one recording share a label. A recording is right when its
    label got strictly more of its windows' votes than any other label; a
    tie is no majority and counts as wrong, the cautious reading.
    """
    right = 0
    ids = np.unique(recordings)
    for recording in ids:
        rows = recordings == recording
        votes, counts = np.unique(y_pred[rows], return_counts=True)
        winners = votes[counts == counts.max()]
        right += int(winners.size == 1 and winners[0] == y_true[rows][0])
    return right / ids.size, int(ids.size)
