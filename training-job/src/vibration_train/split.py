"""Choose the held-out windows: whole machines when the data allow it, else each recording's latest.

Windows of one recording (a machine's stretch of time in one state) are
near-duplicates. A split window by window puts the neighbours of every
held-out window into training, so the held-out figures flatter the model: on
real data a recording-grouped split gave 0.985 where the window split
reported 1.000. The card's accuracy sets the rollout's validation floor, so
the inflation reached the gate. Both splits here keep a recording's windows
apart from their neighbours:

- ``grouped``, when every class has windows on at least two machines: whole
  machines are held out, so no machine trains the model and measures it. A
  machine may carry several classes over time (healthy, then a fault); it
  stays whole, and the choice is stratified by each machine's windows of
  every class rather than by one majority class, which would misstate
  machines that spent most of their time healthy. Machines join the held-out
  side one at a time, each time the one that leaves the fewest classes
  without held-out windows and, among those, brings every class's held-out
  share nearest ``test_size``. A machine whose joining would leave a class
  without training windows never joins; the joining stops when no machine
  improves on the split so far. The seed orders the machines, which only
  decides between equally good ones.
- ``time`` otherwise (no machine column, one machine, a class seen on one
  machine only, machines the choice above cannot divide with every class
  on both sides, as it is greedy, not exhaustive, or so few machines that
  whole ones would hold out more than twice ``test_size``): each recording, a
  machine's windows of one class, keeps its earliest windows for training
  and holds out its latest ``test_size`` share, by timestamp (by file order
  in a table without timestamps). Only the recording's boundary then has
  neighbours on both sides. It is per recording rather than per machine so
  that a machine that ran healthy for months and failed last week holds out
  some of both.

Same table and seed, same split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from vibration_train.errors import TrainingDataError

if TYPE_CHECKING:
    from vibration_train.data import TrainingTable

logger = logging.getLogger(__name__)

SplitKind = Literal["grouped", "time", "external"]
MAX_SHARE_OF_TEST_SIZE = 2.0
"""A grouped split holding out more than this times `test_size` (few machines: one of two is half
the data) trains on too little: the time split is taken instead."""


@dataclass(frozen=True, eq=False)
class Split:
    """Which rows of a table train the model and which measure it."""

    kind: SplitKind
    train: npt.NDArray[np.intp]
    """Row indices of the training windows, ascending."""
    test: npt.NDArray[np.intp]
    """Row indices of the held-out windows, ascending."""
    held_out_machines: tuple[str, ...]
    """Machines with held-out windows, sorted; empty for a table that names no machines."""
    reason: str
    """Why this kind, in words for the report."""

    def parts(
        self, table: TrainingTable
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.str_], npt.NDArray[np.str_]]:
        """Return the training and held-out features, then labels, of `table`."""
        return (
            table.features[self.train],
            table.features[self.test],
            table.labels[self.train],
            table.labels[self.test],
        )


def split_table(table: TrainingTable, test_size: float, random_state: int) -> Split:
    """Split `table` by machine, or by time within each recording when it cannot be (module docstring).

    Raises `TrainingDataError` when a class would have no held-out window.
    """
    machines = machine_of_each_window(table)
    labels = table.labels
    n_machines = np.unique(machines).size
    few = _classes_on_one_machine(labels, machines)
    if table.machines is None:
        reason = "the table names no machines"
    elif n_machines == 1:
        reason = f"the table has one machine only ({machines[0]})"
    elif few:
        reason = "some classes are on one machine only: " + ", ".join(few)
    else:
        held = _hold_out_machines(labels, machines, test_size, random_state)
        test = np.flatnonzero(np.isin(machines, held or []))
        share = test.size / labels.size
        if held is not None and share <= MAX_SHARE_OF_TEST_SIZE * test_size:
            return _make("grouped", test, table, f"{len(held)} of {n_machines} machines held out whole")
        reason = (
            "no division of whole machines was found that leaves every class on both sides"
            if held is None
            else f"whole machines would hold out {share:.0%} of the windows ({len(held)} of {n_machines} "
            f"machines), more than {MAX_SHARE_OF_TEST_SIZE:g} x test_size {test_size:g}"
        )
    test = _latest_of_each_recording(labels, machines, table.timestamps_ns, test_size)
    _check_every_class_held_out(labels, machines, test, test_size)
    return _make("time", test, table, reason)


def machine_of_each_window(table: TrainingTable) -> npt.NDArray[np.str_]:
    """The machine of every window; one unnamed machine (``""``) for a table without the column."""
    if table.machines is None:
        return np.full(table.labels.size, "", dtype=str)
    return table.machines


def recording_ids(machines: npt.NDArray[np.str_], labels: npt.NDArray[np.str_]) -> npt.NDArray[np.intp]:
    """Number each window's recording, its (machine, label) pair: equal pairs, equal numbers."""
    if labels.size == 0:
        return np.zeros(0, dtype=np.intp)
    _, inverse = np.unique(np.column_stack([machines, labels]), axis=0, return_inverse=True)
    return np.asarray(inverse, dtype=np.intp).reshape(-1)


def _classes_on_one_machine(labels: npt.NDArray[np.str_], machines: npt.NDArray[np.str_]) -> list[str]:
    return sorted(
        str(label)
        for label in np.unique(labels)
        if np.unique(machines[labels == label]).size < 2  # noqa: PLR2004
    )


def _hold_out_machines(
    labels: npt.NDArray[np.str_], machines: npt.NDArray[np.str_], test_size: float, random_state: int
) -> list[str] | None:
    """The machines to hold out, or None when no greedy choice gives every class both sides."""
    names, machine_idx = np.unique(machines, return_inverse=True)
    classes, class_idx = np.unique(labels, return_inverse=True)
    counts = np.zeros((names.size, classes.size), dtype=np.int64)  # windows per machine and class
    np.add.at(counts, (machine_idx.reshape(-1), class_idx.reshape(-1)), 1)
    totals = counts.sum(axis=0)
    order = np.random.default_rng(random_state).permutation(names.size)
    held = np.zeros(names.size, dtype=bool)
    held_counts = np.zeros(classes.size, dtype=np.int64)
    best: tuple[int, float] = (classes.size, classes.size * test_size**2)
    while True:
        trial = held_counts + counts  # row m: the held-out windows per class if machine m joined
        uncovered = np.count_nonzero(trial == 0, axis=1)  # classes still without held-out windows
        cost = np.sum((trial / totals - test_size) ** 2, axis=1)  # distance from the wanted shares
        score: list[tuple[int, float]] = list(zip(uncovered.tolist(), cost.tolist(), strict=True))
        allowed = ~held & (trial < totals).all(axis=1)  # every class keeps training windows
        # min() keeps the first of equal scores: the seed's order decides between equal machines.
        chosen = min((int(m) for m in order if allowed[m]), key=score.__getitem__, default=None)
        if chosen is None or score[chosen] >= best:
            break
        best = score[chosen]
        held[chosen] = True
        held_counts = trial[chosen]
    if best[0] > 0:
        return None
    return [str(name) for name in names[held]]


def _latest_of_each_recording(
    labels: npt.NDArray[np.str_],
    machines: npt.NDArray[np.str_],
    timestamps_ns: npt.NDArray[np.int64] | None,
    test_size: float,
) -> npt.NDArray[np.intp]:
    recording = recording_ids(machines, labels)
    when = timestamps_ns if timestamps_ns is not None else np.arange(labels.size, dtype=np.int64)
    order = np.lexsort((np.arange(labels.size), when, recording))  # by recording, then time, then row
    sizes = np.bincount(recording)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.arange(labels.size) - starts[recording[order]]  # 0 for a recording's earliest window
    keep = sizes - _held_out_count(sizes, test_size)  # training windows per recording
    return np.sort(order[rank >= keep[recording[order]]])


def _held_out_count(sizes: npt.NDArray[np.int64], test_size: float) -> npt.NDArray[np.int64]:
    """Windows held out of recordings of `sizes` windows: the share rounded, at least 1, never all."""
    share = np.floor(sizes * test_size + 0.5).astype(np.int64)
    count: npt.NDArray[np.int64] = np.minimum(np.maximum(share, 1), sizes - 1)
    return count


def _check_every_class_held_out(
    labels: npt.NDArray[np.str_], machines: npt.NDArray[np.str_], test: npt.NDArray[np.intp], test_size: float
) -> None:
    missing = sorted(set(labels.tolist()) - set(labels[test].tolist()))
    if not missing:
        return
    label = missing[0]
    n_machines = np.unique(machines[labels == label]).size
    n_windows = int(np.count_nonzero(labels == label))
    raise TrainingDataError(
        "split",
        f"class {label} has {n_machines} machine(s) and {n_windows} window(s), one per machine, so no "
        f"window of it is held out: a split by time holds out the latest {test_size:.0%} of each machine's "
        "windows of a class and needs at least 2 of them on one machine; a split by machine needs every "
        "class on at least 2 machines",
    )


def _make(kind: SplitKind, test: npt.NDArray[np.intp], table: TrainingTable, reason: str) -> Split:
    train = np.setdiff1d(np.arange(table.labels.size), test).astype(np.intp)
    held_out = () if table.machines is None else tuple(sorted(set(table.machines[test].tolist())))
    logger.info(
        "split_chosen",
        extra={
            "kind": kind,
            "train": train.size,
            "test": test.size,
            "held_out_machines": ",".join(held_out) or "-",
            "reason": reason,
        },
    )
    return Split(kind, train, test.astype(np.intp), held_out, reason)


def everything(table: TrainingTable) -> Split:
    """Every row held out, none trained: a model trained elsewhere, measured on all the data given."""
    return _make(
        "external",
        np.arange(table.labels.size, dtype=np.intp),
        table,
        "the model was trained elsewhere: every window given measures it",
    )
