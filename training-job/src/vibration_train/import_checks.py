"""What an imported ONNX classifier's outputs say: the names given for its classes, and its labels.

Its graph is read and checked before it runs (`import_graph.read_graph`,
which keeps the classes its classifier states). The names given with
``--labels`` are held to it here: at least two, none empty or repeated, not
numbers (`check_labels`), one per probability column and per stated class
(`check_width`); the i-th name stands for the i-th stated class
(`integer_names`).

Once the model has run, `decode_labels` turns its label output into names:
an int64 label is the name of the column where it stands among the stated
classes (the i-th name for ``i`` when the graph states none), a string label
must be one of the names. Serving reads only the probabilities and names
their columns with the card's labels, so the label output is held to the
largest probability of every row (ties aside). That proves the label output
and the columns agree, not that the names are in column order: the importer
holds the decoded names to the data's true labels for that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import numpy as np

from vibration_train.errors import ModelImportError
from vibration_train.fit_labels import as_integers
from vibration_train.onnx_export import PROB_TOLERANCE

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt

    from vibration_train.import_graph import ImportedGraph

SUM_TOLERANCE: Final = 1e-3
"""How far from 1 a row of float32 probabilities may sum (a softmax of a few classes is within 1e-6)."""


def check_labels(labels: Sequence[str], source: str) -> tuple[str, ...]:
    """The class names, stripped; refused when empty, repeated or fewer than two."""
    names = tuple(label.strip() for label in labels)
    if len(names) < 2 or not all(names):  # noqa: PLR2004 - a classifier has two classes at least
        raise ModelImportError(
            source, f"--labels must name at least 2 classes, none empty; got {list(names)}"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ModelImportError(source, f"--labels names {', '.join(map(repr, repeated))} more than once")
    if as_integers(list(names)) is not None:  # as fit refuses them: no class would be the normal one
        raise ModelImportError(
            source,
            f"--labels names the classes by numbers ({', '.join(names)}): the card, predictions and "
            "alerts use these names and none would be the normal class; name them, in the model's "
            "class order (e.g. --labels normal,imbalance,misalignment,bearing_fault)",
        )
    return names


def check_width(graph: ImportedGraph, labels: Sequence[str]) -> None:
    """Refuse labels that do not give each probability column a name (when the graph states the width)."""
    width = graph.probabilities.shape[-1]
    if width is not None and width != len(labels):
        raise ModelImportError(
            graph.source,
            f"--labels names {len(labels)} classes ({', '.join(labels)}), but the probabilities output "
            f"{graph.probabilities.name!r} has {width} columns: give one label per column, in column order",
        )
    if graph.classes is not None and len(graph.classes) != len(labels):
        raise ModelImportError(
            graph.source,
            f"--labels names {len(labels)} classes ({', '.join(labels)}), but its classifier states "
            f"{len(graph.classes)} ({_listed(graph.classes)}): give one label per class, in column order",
        )


def integer_names(graph: ImportedGraph, labels: Sequence[str]) -> dict[str, str]:
    """The name each int64 class stands for, the class written as text (``{'0': 'normal', ...}``).

    Empty for a model with string labels. `labels` are given one per column (`check_width`).
    """
    classes = graph.integer_classes(len(labels))
    if classes is None:
        return {}
    return {str(value): name for value, name in zip(classes, labels, strict=True)}


def _listed(values: Sequence[object]) -> str:
    return ", ".join(str(value) for value in values)


def decode_labels(
    graph: ImportedGraph,
    raw_labels: npt.NDArray[np.generic],
    probabilities: npt.NDArray[np.float32],
    labels: Sequence[str],
) -> npt.NDArray[np.str_]:
    """The model's label of each row as a name; refused unless the names fit the outputs."""
    n, k = int(probabilities.shape[0]), len(labels)
    if probabilities.shape != (n, k) or raw_labels.shape != (n,):
        raise ModelImportError(
            graph.source,
            f"gave labels of shape {raw_labels.shape} and probabilities of shape {probabilities.shape}; "
            f"expected ({n},) and ({n}, {k}), one column per --labels entry",
        )
    _check_probabilities(graph, probabilities)
    names = np.asarray(labels)
    if raw_labels.dtype.kind in "iu":
        column_of = {value: column for column, value in enumerate(graph.integer_classes(k) or range(k))}
        values = raw_labels.astype(np.int64).tolist()
        outside = [value for value in values if value not in column_of]
        if outside:
            shown, rows = _listed(sorted(set(outside))[:10]), f"(in {len(outside)} of {n} rows)"
            which = (
                f"outside 0..{k - 1} {rows}: the graph states no class list, so label i means the i-th "
                f"of the {k} --labels and its classes must be numbered from 0"
                if graph.classes is None
                else f"none of the classes its classifier states ({_listed(graph.classes)}) {rows}"
            )
            raise ModelImportError(graph.source, f"label output {graph.label.name!r} holds {shown}, {which}")
        predicted = names[[column_of[value] for value in values]]
        remedy = "an int64 label must be the class of its probability column, and here it is not"
    else:
        predicted = raw_labels.astype(str)
        unknown = sorted(set(predicted.tolist()) - set(labels))
        if unknown:
            raise ModelImportError(
                graph.source,
                f"label output {graph.label.name!r} holds {', '.join(map(repr, unknown))}, which --labels "
                f"({', '.join(labels)}) does not name",
            )
        stated = "" if graph.classes is None else f", which its classifier states: {_listed(graph.classes)}"
        remedy = (
            f"give --labels in the order of the probability columns (scikit-learn's classes_ order{stated})"
        )
    _check_column_order(graph, predicted, probabilities, names, remedy)
    return predicted


def _check_probabilities(graph: ImportedGraph, probabilities: npt.NDArray[np.float32]) -> None:
    """Refuse scores that are not probabilities: serve clips them into confidences of about 1."""
    sums = probabilities.sum(axis=1, dtype=np.float64)
    outside = ~((probabilities >= -PROB_TOLERANCE) & (probabilities <= 1 + PROB_TOLERANCE))  # NaN too
    off = np.flatnonzero(outside.any(axis=1) | (np.abs(sums - 1) > SUM_TOLERANCE))
    if off.size:
        row = int(off[0])
        shown = ", ".join(f"{value:.3f}" for value in probabilities[row].tolist())
        raise ModelImportError(
            graph.source,
            f"its probabilities output {graph.probabilities.name!r} holds no probabilities: in "
            f"{off.size} of {probabilities.shape[0]} rows they leave [0, 1] or do not sum to 1 (row {row}: "
            f"[{shown}], sum {sums[row]:.3f}); scores (skl2onnx's raw_scores, a decision function) are "
            "not probabilities: convert without raw_scores, or end the graph with a Softmax",
        )


def _check_column_order(
    graph: ImportedGraph,
    predicted: npt.NDArray[np.str_],
    probabilities: npt.NDArray[np.float32],
    names: npt.NDArray[np.str_],
    remedy: str,
) -> None:
    best = probabilities.argmax(axis=1)
    top_two = np.sort(probabilities, axis=1)[:, -2:]
    tied = top_two[:, 1] - top_two[:, 0] <= PROB_TOLERANCE
    wrong = (predicted != names[best]) & ~tied
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        said, column = str(predicted[row]), int(best[row])
        raise ModelImportError(
            graph.source,
            f"its label output and its largest probability disagree in {int(wrong.sum())} of "
            f"{predicted.size} rows (row {row}: label {said!r}, largest probability in column {column}, "
            f"which --labels calls {str(names[column])!r}): {remedy}",
        )
