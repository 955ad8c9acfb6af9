"""An imported model's names against its data: how the data's labels read, and whether the names fit.

The reference pipeline's tables label windows with the model's integer
classes (``0``..``3``) and its models state those classes in their
classifier node; `read_data_labels` reads such labels as the names given
with ``--labels`` (``classes[i]`` is ``labels[i]``) and `check_data_labels`
refuses labels that are neither. Serving names the probability columns with
the card's labels, so the names must be given in column order: the model's
label output cannot tell a wrong order, the data's true labels can
(`check_label_order`).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Final

import numpy as np

from vibration_train.errors import ModelImportError, TrainingDataError
from vibration_train.fit_labels import as_integers
from vibration_train.import_checks import integer_names

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt

    from vibration_train.data import TrainingTable
    from vibration_train.import_graph import ImportedGraph

logger = logging.getLogger("vibration_train.importer")

ORDER_MARGIN: Final = 0.10
"""Accuracy on the data by which another order of the names must beat the given one to refuse it."""
_EXHAUSTIVE_CLASSES: Final = 8
"""Up to this many classes every order is tried (8! = 40 320); above, the best is built greedily."""


def read_data_labels(
    table: TrainingTable, graph: ImportedGraph, labels: tuple[str, ...]
) -> tuple[TrainingTable, dict[str, str]]:
    """The table with its labels as names, and the name each label was read as (empty when named).

    Labels that are all the model's integer classes written as text take the
    names of their classes' columns (``classes[i]`` is ``labels[i]``); data
    already named stays as it is. Then `check_data_labels`.
    """
    by_class = integer_names(graph, labels)
    values, rows = np.unique(table.labels, return_inverse=True)
    found = [str(value) for value in values.tolist()]
    # As `fit` reads them: 3, 03 and 3.0 (a column of integers through a float round trip) are class 3.
    spelled = {value: str(integer[value]) if (integer := as_integers([value])) else value for value in found}
    if len(set(spelled.values())) < len(found):
        raise TrainingDataError(
            table.source,
            f"the labels write one integer in several ways ({', '.join(found)}): write each once",
        )
    read_as: dict[str, str] = {}
    if by_class and not set(found) <= set(labels) and set(spelled.values()) <= by_class.keys():
        read_as = {value: by_class[spelled[value]] for value in found}
        table = replace(table, labels=np.asarray([read_as[value] for value in found])[rows])
        logger.info("data_labels_read_as_names", extra={"source": table.source, "read_as": read_as})
    elif by_class and spelled != {value: value for value in found}:  # judged as the model writes them
        table = replace(table, labels=np.asarray([spelled[value] for value in found])[rows])
    check_data_labels(table, labels, by_class)
    return table, read_as


def describe_read_as(read_as: dict[str, str]) -> str:
    """``data labels 0, 1 read as normal, imbalance``: a renaming as the report states it."""
    return f"data labels {', '.join(read_as)} read as {', '.join(read_as.values())}"


def check_data_labels(
    table: TrainingTable, labels: Sequence[str], by_class: dict[str, str] | None = None
) -> None:
    """Refuse data with labels the model does not know, or without windows of a label it does.

    `by_class` (`integer_names`) are the model's integer classes, which data
    may give instead of the names, though not beside them.
    """
    counts, by_class = table.class_counts(), by_class or {}
    unknown = {
        label: count for label, count in counts.items() if label not in labels and label not in by_class
    }
    if unknown:
        listed = ", ".join(f"{label!r} ({count} windows)" for label, count in unknown.items())
        if not by_class:
            raise TrainingDataError(
                table.source,
                f"holds labels that --labels does not name: {listed}; --labels: {', '.join(labels)}",
            )
        raise TrainingDataError(
            table.source,
            f"holds labels that are neither a --labels name nor one of the model's integer classes: "
            f"{listed}; --labels: {', '.join(labels)}; its classes, in that order: {', '.join(by_class)}",
        )
    numbered = [label for label in counts if label not in labels]
    if numbered:
        named = [label for label in counts if label in labels]
        raise TrainingDataError(
            table.source,
            f"labels some windows with names ({', '.join(map(repr, named))}) and others with the model's "
            f"integer classes ({', '.join(map(repr, numbered))}): label every window one way",
        )
    missing = [label for label in labels if label not in counts]
    if missing:
        raise TrainingDataError(
            table.source,
            f"has no windows of {', '.join(map(repr, missing))}: the card's metrics and reference "
            "distribution need windows of every class the model knows",
        )


def check_label_order(
    graph: ImportedGraph,
    predicted: npt.NDArray[np.str_],
    truth: npt.NDArray[np.str_],
    labels: Sequence[str],
    data_source: str,
) -> None:
    """Refuse names given out of column order: another order that fits `truth` clearly better.

    `predicted` are the model's names of the rows (`decode_labels`), `truth`
    the data's labels, each one of `labels`. The given order is kept unless
    another assignment of the names to the columns gets at least
    `ORDER_MARGIN` more of the rows right: a weak model stays near the
    diagonal, a model whose names are swapped does not.
    """
    k, n = len(labels), int(truth.size)
    index = {name: i for i, name in enumerate(labels)}
    confusion = np.zeros((k, k), dtype=np.int64)  # [true name, predicted column]
    np.add.at(confusion, ([index[t] for t in truth.tolist()], [index[p] for p in predicted.tolist()]), 1)
    given = int(np.trace(confusion))
    order = _best_order(confusion)
    best = int(confusion[order, np.arange(k)].sum())
    if n and (best - given) / n >= ORDER_MARGIN:
        better = ", ".join(labels[name] for name in order.tolist())
        raise ModelImportError(
            graph.source,
            f"its accuracy on the {n} windows of {data_source} is {given / n:.4f} with --labels in the "
            f"order given ({', '.join(labels)}) and {best / n:.4f} in the order {better}: the names are "
            "not in the order of its probability columns; give --labels in the order of the probability "
            "columns (scikit-learn's classes_ order)",
        )


def _best_order(confusion: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
    """The name (row) to give each column that gets the most rows right; the given order wins ties."""
    k = int(confusion.shape[0])
    columns = np.arange(k)
    if k <= _EXHAUSTIVE_CLASSES:
        # The identity comes first, and argmax keeps the first of equal counts.
        orders = np.array(list(itertools.permutations(range(k))), dtype=np.intp)
        best: npt.NDArray[np.intp] = orders[int(confusion[orders, columns].sum(axis=1).argmax())]
        return best
    # Greedily, the largest count first; counts are >= 0, so a taken row or column (-1) never wins again.
    order = columns.copy()
    remaining = confusion.astype(np.float64)
    for _ in range(k):
        name, column = np.unravel_index(int(remaining.argmax()), remaining.shape)
        order[column] = name
        remaining[name, :] = -1.0
        remaining[:, column] = -1.0
    return order
