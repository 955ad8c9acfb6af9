"""Import an ONNX classifier trained elsewhere: check it, measure it, write it with its card.

The model case is the reference pipeline's: a gradient-boosting classifier on
the ten features, converted by skl2onnx with ``zipmap`` off, whose int64
classes (0..3, as its classifier node states them) are the columns of the
names the user gives (`--labels`, in column order). The steps, each refusing
with a message that names what is wrong:

1. the graph (`import_graph.read_graph`): one float32 input of ten columns,
   an int64 or string label output, a float32 probabilities output with one
   column per label, and the classes its classifier states, one per label;
2. the data (`data.load_table`, raw windows or a features table) and its
   labels (`import_labels.read_data_labels`): labels that are all the model's integer
   classes written as text (``0``..``3``, as the reference pipeline's tables
   hold them) are read as the names of their columns, and the report and
   the log say so; then every label in it must be one of the names, and
   every name must be in it (the card's metrics and reference distribution
   cover each class);
3. ONNX Runtime runs the model on the data's features; `decode_labels` turns
   its label output into names (an int64 label is the name of its class's
   column, a string label must be one of the names) and holds it to the
   largest probability of every row that is not a tie;
4. the names against the data (`import_labels.check_label_order`): serving names the
   probability columns with the card's labels, so the labels must be given
   in column order. The label output cannot tell; the data's true labels
   can: when another order of the names gets at least `ORDER_MARGIN` more of
   the windows right than the order given, the names are refused with the
   better order (a weak model, near the diagonal, keeps its order);
5. the card (`imported_card`): metrics and reference distribution from the
   whole data set (the model was trained elsewhere: there is no held-out
   split to take), the framework string and hyperparameters saying so;
6. `card.write_model`: the model's bytes unchanged, then the card, ready for
   `vibration-train publish`. Nothing is written unless every step passed.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from vibration_core.features import EXTRACTOR_VERSION, FEATURE_NAMES
from vibration_core.modelcard import ModelCard
from vibration_core.modelcard_parts import FeatureSpec, Signal
from vibration_train.card import ONNX_FILENAME, artifact_of, table_reference, training_summary, write_model
from vibration_train.data import load_table
from vibration_train.errors import ModelImportError
from vibration_train.fit import compute_metrics
from vibration_train.import_checks import check_labels, check_width, decode_labels
from vibration_train.import_graph import describe, read_graph
from vibration_train.import_labels import check_label_order, describe_read_as, read_data_labels
from vibration_train.report import format_report
from vibration_train.split import everything

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from contextlib import AbstractContextManager

    import numpy.typing as npt

    from vibration_core.units import Unit
    from vibration_train.data import TrainingTable
    from vibration_train.import_graph import ImportedGraph

    Step = Callable[[str], AbstractContextManager[Callable[[int, int], None]]]

logger = logging.getLogger(__name__)

# onnxruntime's own errors derive from Exception only.
_ORT_ERRORS: Final = (
    ort_state.Fail,
    ort_state.InvalidArgument,
    ort_state.InvalidGraph,
    ort_state.NotImplemented,
    ort_state.RuntimeException,
    RuntimeError,
)


@dataclass(frozen=True, eq=False)
class ImportResult:
    """What `import_model` wrote, and the data it measured the model on."""

    card: ModelCard
    artifact_path: Path
    card_path: Path
    table: TrainingTable
    """The data, its labels as names."""
    read_as: dict[str, str]
    """The name each of the data's labels was read as, when they were the model's integer classes."""

    def report(self) -> str:
        """What `vibration-train import` prints: the data, the classification report, the files."""
        card, table = self.card, self.table
        signal = f"{table.sample_rate:g} Hz x {table.window_length} in {table.unit}"
        head = (
            f"{table.labels.size} windows at {signal}, all of them measured "
            "(the model was trained elsewhere: no held-out split)\n"
        )
        if self.read_as:
            head += f"{describe_read_as(self.read_as)} (the model's classes, in --labels order)\n"
        tail = (
            f"{card.framework}; input {describe(card.input)}; "
            f"labels {card.outputs[0].dtype} -> {', '.join(card.labels)}\n"
            f"wrote {self.artifact_path} (sha256 {card.artifact.sha256}) and {self.card_path}\n"
        )
        return head + format_report(card.metrics, card.labels) + tail


def import_model(
    model: Path,
    labels: Sequence[str],
    data: Path,
    out: Path,
    *,
    model_id: str,
    version: str,
    sample_rate: float | None = None,
    window_length: int | None = None,
    unit: Unit | None = None,
    step: Step | None = None,
) -> ImportResult:
    """Check `model` against `labels` and the data, measure it, write it and its card into `out`.

    `sample_rate`, `window_length` and `unit` describe the signal as for
    `load_table`. `step(description)` wraps each long step (a progress
    display) and yields ``advance(done, total)``. Raises `ModelImportError`
    for the model or the labels, `TrainingDataError` for the data,
    `OutputError` when `out` cannot be written.
    """
    run = step or (lambda _description: contextlib.nullcontext(lambda _done, _total: None))
    names = check_labels(labels, model.name)
    try:
        graph = read_graph(model.read_bytes(), model.name)
    except OSError as exc:
        raise ModelImportError(str(model), f"cannot be read: {exc.strerror or exc}") from exc
    check_width(graph, names)
    with run(f"loading {data.name}") as advance:
        table = load_table(
            data, sample_rate=sample_rate, window_length=window_length, unit=unit, on_progress=advance
        )
    table, read_as = read_data_labels(table, graph, names)
    with run(f"running the model on {table.labels.size} windows"):
        raw_labels, probabilities = run_model(graph, table.features)
    predicted = decode_labels(graph, raw_labels, probabilities, names)
    check_label_order(graph, predicted, table.labels, names, table.source)
    card = imported_card(graph, names, table, predicted, model_id=model_id, version=version)
    artifact_path, card_path = write_model(out, graph.data, card)
    logger.info(
        "model_imported",
        extra={
            "source": graph.source,
            "windows": table.labels.size,
            "accuracy": round(card.metrics.accuracy, 4),
        },
    )
    return ImportResult(card, artifact_path, card_path, table, read_as)


def run_model(
    graph: ImportedGraph, features: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.float32]]:
    """The label output and the probabilities of ONNX Runtime (CPU) on `features`."""
    try:
        session = ort.InferenceSession(graph.data, providers=["CPUExecutionProvider"])
        raw_labels, probabilities = session.run(
            [graph.label.name, graph.probabilities.name],
            {graph.input.name: np.ascontiguousarray(features, dtype=np.float32)},
        )
    except _ORT_ERRORS as exc:
        raise ModelImportError(
            graph.source, f"ONNX Runtime cannot run it: {' '.join(str(exc).split())}"
        ) from exc
    return np.asarray(raw_labels).ravel(), np.asarray(probabilities, dtype=np.float32)


def imported_card(
    graph: ImportedGraph,
    labels: tuple[str, ...],
    table: TrainingTable,
    predicted: npt.NDArray[np.str_],
    *,
    model_id: str,
    version: str,
    created: datetime | None = None,
) -> ModelCard:
    """The card of an imported model, measured on all of `table` (the one place it is built)."""
    opsets = ", ".join(f"{domain} {number}" for domain, number in sorted(graph.opsets.items()))
    return ModelCard(
        model_id=model_id,
        version=version,
        framework=f"imported: {graph.producer}; opsets {opsets}",
        format="onnx",
        created=created or datetime.now(UTC),
        artifact=artifact_of(ONNX_FILENAME, graph.data),
        labels=labels,
        features=FeatureSpec(names=FEATURE_NAMES, extractor_version=EXTRACTOR_VERSION),
        signal=Signal(sample_rate=table.sample_rate, window_length=table.window_length, unit=table.unit),
        input=graph.input,
        outputs=graph.outputs,
        training=training_summary(table, labels),
        metrics=compute_metrics(table, everything(table), predicted, labels),
        reference=table_reference(table, labels),
        hyperparameters={"imported_from": graph.source, "evaluated_on": Path(table.source).name},
    )
