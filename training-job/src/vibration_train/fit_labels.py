"""Class names for a training table labelled with integers, as the reference pipeline's tables are.

A table whose labels are all integers (``0``..``3``) would give a card whose
classes are called "0".."3": predictions and alerts would name them so, and
no class would be `normal`. `fit --labels normal,imbalance,...` names them:
the i-th smallest integer class takes the i-th name, which is scikit-learn's
``classes_`` order and so the reference pipeline's. Without names such a table
is refused; a table already labelled with names is read as it is.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from vibration_train.errors import TrainingDataError

if TYPE_CHECKING:
    from vibration_train.data import TrainingTable


_INTEGER = re.compile(r"[+-]?[0-9]+(?:\.0*)?")
"""An integer as a table writes it: ``3``, ``03``, ``-1``, ``3.0`` (ASCII digits, no exponent)."""


def as_integers(values: list[str]) -> dict[str, int] | None:
    """Each label as the integer it writes (``3``, ``03``, ``3.0``), or None when one is not one."""
    if not all(_INTEGER.fullmatch(value) for value in values):
        return None
    return {value: int(value.split(".", 1)[0]) for value in values}


def name_classes(table: TrainingTable, names: tuple[str, ...] | None) -> tuple[TrainingTable, dict[str, str]]:
    """The table with integer labels replaced by `names`, and how each was read (empty: as it was)."""
    values, rows = np.unique(table.labels, return_inverse=True)
    found = [str(value) for value in values.tolist()]
    integers = as_integers(found)
    classes = sorted(set(integers.values())) if integers is not None else []
    shown = ", ".join(map(str, classes))
    if names is None:
        if integers is not None:
            raise TrainingDataError(
                table.source,
                f"the labels are integers ({shown}): name the classes with --labels, the i-th name for the "
                "i-th smallest (e.g. --labels normal,imbalance,misalignment,bearing_fault); the card, "
                "predictions and alerts use them",
            )
        return table, {}
    if integers is None:
        already = ", ".join(found)
        raise TrainingDataError(
            table.source, f"--labels names integer classes, and the labels are names already ({already})"
        )
    if len(classes) != len(found):
        raise TrainingDataError(
            table.source,
            f"the labels write one integer in several ways ({', '.join(found)}): write each once",
        )
    if len(set(names)) != len(names) or any(not name.strip() for name in names):
        detail = f"--labels must be distinct, non-empty names, got {list(names)}"
        raise TrainingDataError(table.source, detail)
    if len(names) != len(classes):
        raise TrainingDataError(
            table.source, f"--labels gives {len(names)} names for {len(classes)} integer classes ({shown})"
        )
    read_as = {
        value: names[classes.index(integers[value])] for value in sorted(found, key=integers.__getitem__)
    }
    named = np.asarray([read_as[value] for value in found])
    return replace(table, labels=named[rows]), read_as
