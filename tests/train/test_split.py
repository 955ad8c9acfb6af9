"""The held-out split: whole machines when every class has two, else each recording's latest windows.

The tables here are built by hand (features are random numbers) so that
which machine carries which class, and when, is exactly what a test says.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.model_selection import train_test_split

from vibration_testkit.train_tables import TINY
from vibration_train.data import TrainingTable
from vibration_train.errors import TrainingDataError
from vibration_train.fit import fit, recording_accuracy
from vibration_train.split import recording_ids, split_table


def table_of(
    machines: list[str], labels: list[str], *, seconds: list[int] | None = None, seed: int = 0
) -> TrainingTable:
    """A features table with random features; window i is machine i's, at `seconds[i]` (default: i)."""
    n = len(labels)
    stamps = np.asarray(seconds if seconds is not None else range(n), dtype=np.int64) * 10**9
    return TrainingTable(
        source="hand-made",
        features=np.random.default_rng(seed).normal(size=(n, 10)).astype(np.float32),
        labels=np.asarray(labels, dtype=str),
        machines=np.asarray(machines, dtype=str),
        timestamps_ns=stamps,
        sample_rate=25600.0,
        window_length=1024,
        modified=datetime(2025, 1, 1, tzinfo=UTC),
        unit="g",
    )


def machines_each_carrying(classes_of: dict[str, list[str]], windows: int) -> TrainingTable:
    """`windows` windows of each machine's each class, the classes one after another in time."""
    machines, labels = [], []
    for machine, classes in classes_of.items():
        for label in classes:
            machines += [machine] * windows
            labels += [label] * windows
    return table_of(machines, labels)


def sides(table: TrainingTable, rows: npt.NDArray[np.intp]) -> set[str]:
    assert table.machines is not None
    return set(table.machines[rows].tolist())


def test_machines_carrying_several_classes_are_held_out_whole() -> None:
    # Each machine ran healthy, then developed a fault; every class is on at least two machines.
    table = machines_each_carrying(
        {
            "m1": ["normal", "imbalance"],
            "m2": ["normal", "imbalance"],
            "m3": ["normal", "bearing_fault"],
            "m4": ["normal", "bearing_fault"],
            "m5": ["normal"],
            "m6": ["normal", "imbalance"],
        },
        windows=10,
    )
    split = split_table(table, test_size=0.2, random_state=42)
    assert split.kind == "grouped"
    assert sides(table, split.train).isdisjoint(sides(table, split.test))
    assert np.array_equal(np.sort(np.concatenate([split.train, split.test])), np.arange(table.labels.size))
    assert (
        set(table.labels[split.test].tolist())
        == set(table.labels[split.train].tolist())
        == {
            "normal",
            "imbalance",
            "bearing_fault",
        }
    )
    assert split.held_out_machines == tuple(sorted(sides(table, split.test)))
    # bearing_fault has two machines: one of them is held out, so at least that one's 20 windows.
    assert 20 <= split.test.size <= 40


def test_the_split_is_seeded_and_the_seed_only_picks_between_equal_machines() -> None:
    table = machines_each_carrying({f"m{i}": ["normal", "imbalance"] for i in range(10)}, windows=5)
    first = split_table(table, test_size=0.2, random_state=1)
    again = split_table(table, test_size=0.2, random_state=1)
    np.testing.assert_array_equal(first.test, again.test)
    held = {split_table(table, test_size=0.2, random_state=seed).held_out_machines for seed in range(8)}
    assert {len(machines) for machines in held} == {2}  # 20 % of ten equal machines, whatever the seed
    assert len(held) > 1


def test_the_held_out_share_follows_test_size_as_near_as_whole_machines_allow() -> None:
    table = machines_each_carrying({f"m{i}": ["normal", "imbalance"] for i in range(10)}, windows=5)
    for test_size, machines in ((0.1, 1), (0.2, 2), (0.3, 3), (0.5, 5)):
        split = split_table(table, test_size=test_size, random_state=0)
        assert len(split.held_out_machines) == machines, test_size


def test_one_machine_per_class_holds_out_each_machines_latest_windows() -> None:
    # Rows out of time order: the split must go by timestamp, not by row.
    machines = ["m-normal"] * 10 + ["m-fault"] * 10
    labels = ["normal"] * 10 + ["bearing_fault"] * 10
    seconds = [9, 3, 0, 7, 1, 8, 2, 6, 4, 5] * 2
    table = table_of(machines, labels, seconds=seconds)
    split = split_table(table, test_size=0.2, random_state=42)
    assert split.kind == "time"
    assert "on one machine only: bearing_fault, normal" in split.reason
    assert split.held_out_machines == ("m-fault", "m-normal")
    assert table.timestamps_ns is not None
    for machine in ("m-normal", "m-fault"):
        assert table.machines is not None
        own = table.machines == machine
        held = table.timestamps_ns[np.intersect1d(split.test, np.flatnonzero(own))]
        kept = table.timestamps_ns[np.intersect1d(split.train, np.flatnonzero(own))]
        assert sorted(held // 10**9) == [8, 9]  # the latest 20 %
        assert held.min() > kept.max()


def test_a_machine_that_changed_state_holds_out_the_latest_of_each_state() -> None:
    # One machine: healthy for 20 windows, then faulty for 5. Its latest 20 % alone would all be faulty.
    labels = ["normal"] * 20 + ["bearing_fault"] * 5
    table = table_of(["m1"] * 25, labels)
    split = split_table(table, test_size=0.2, random_state=42)
    assert split.kind == "time"
    assert split.reason == "the table has one machine only (m1)"
    assert split.test.tolist() == [16, 17, 18, 19, 24]


def test_a_table_without_machines_is_split_by_time_in_file_order() -> None:
    table = replace(table_of(["-"] * 10, ["a"] * 5 + ["b"] * 5), machines=None, timestamps_ns=None)
    split = split_table(table, test_size=0.2, random_state=42)
    assert (split.kind, split.reason, split.held_out_machines) == ("time", "the table names no machines", ())
    assert split.test.tolist() == [4, 9]


def test_machines_no_grouping_can_divide_fall_back_to_time() -> None:
    # Every class is on two machines, but holding out any machine that covers all three classes
    # leaves one class with no training machine.
    table = machines_each_carrying({"m1": ["a", "c"], "m2": ["a", "b"], "m3": ["b", "c"]}, windows=10)
    split = split_table(table, test_size=0.2, random_state=42)
    assert split.kind == "time"
    assert split.reason == "no division of whole machines was found that leaves every class on both sides"
    assert set(table.labels[split.test].tolist()) == {"a", "b", "c"}


def test_too_few_machines_to_hold_out_whole_ones_fall_back_to_time() -> None:
    # Two machines: one held out whole is half the data, which the card called test_size 0.2.
    table = machines_each_carrying({"m1": ["a", "b"], "m2": ["a", "b"]}, windows=20)
    split = split_table(table, test_size=0.2, random_state=42)
    assert split.kind == "time"
    assert split.reason == (
        "whole machines would hold out 50% of the windows (1 of 2 machines), more than 2 x test_size 0.2"
    )
    assert split.test.size == 16  # the latest fifth of each of the four recordings of 20
    assert split_table(table, test_size=0.24, random_state=42).kind == "time"
    assert split_table(table, test_size=0.25, random_state=42).kind == "grouped"  # 2 x 0.25 = 50 %


def test_a_class_that_cannot_be_held_out_is_refused_by_name() -> None:
    # 'rare' has one window on each of two machines; 'normal' is on one machine, so no grouped split.
    table = table_of(["m1"] * 10 + ["m1", "m2"], ["normal"] * 10 + ["rare", "rare"])
    with pytest.raises(TrainingDataError) as caught:
        split_table(table, test_size=0.2, random_state=42)
    assert caught.value.detail.startswith(
        "class rare has 2 machine(s) and 2 window(s), one per machine, so no window of it is held out"
    )
    assert "needs at least 2 of them on one machine" in caught.value.detail


def test_a_window_level_leak_is_no_longer_possible() -> None:
    # Each machine's windows are near-duplicates of one fingerprint, and the class says nothing the
    # features show: only a model that saw a held-out machine's windows in training can score.
    rng = np.random.default_rng(5)
    classes = ["normal", "imbalance", "misalignment", "bearing_fault"]
    n_machines, windows = 40, 12  # ten machines per class
    machines = [f"m{i:02d}" for i in range(n_machines) for _ in range(windows)]
    labels = [classes[i % 4] for i in range(n_machines) for _ in range(windows)]
    centres = rng.normal(size=(n_machines, 10))
    features = np.repeat(centres, windows, axis=0) + 0.01 * rng.normal(size=(len(labels), 10))
    table = replace(table_of(machines, labels), features=features.astype(np.float32))

    result = fit(table, TINY)
    assert result.split.kind == "grouped"
    assert sides(table, result.split.train).isdisjoint(sides(table, result.split.test))
    np.testing.assert_array_equal(result.x_test, table.features[result.split.test])
    assert result.metrics.accuracy < 0.6  # chance is 0.25

    # The old split, window by window, on the same table: it reads the machine and scores.
    x_train, x_test, y_train, y_test = train_test_split(
        table.features, table.labels, test_size=0.2, stratify=table.labels, random_state=42
    )
    leaky = GradientBoostingClassifier(n_estimators=20, random_state=42).fit(x_train, y_train)
    assert np.mean(leaky.predict(x_test) == y_test) > 0.95


def test_recording_accuracy_is_the_share_of_recordings_whose_majority_is_right() -> None:
    machines = np.array(["m1"] * 3 + ["m1"] * 2 + ["m2"] * 4 + ["m3"] * 1)
    y_true = np.array(["normal"] * 3 + ["fault"] * 2 + ["normal"] * 4 + ["fault"] * 1)
    y_pred = np.array(
        [
            *["normal", "fault", "normal"],  # m1 normal: 2 of 3 right: right
            *["normal", "fault"],  # m1 fault: a tie: no majority, wrong
            *["fault", "fault", "normal", "fault"],  # m2 normal: majority fault: wrong
            "fault",  # m3 fault: right
        ]
    )
    recordings = recording_ids(machines, y_true)
    assert len(set(recordings.tolist())) == 4
    assert recording_accuracy(recordings, y_true, y_pred) == (0.5, 4)
    assert np.mean(y_pred == y_true) == 0.5  # per window, by coincidence the same
    y_pred[3] = "fault"  # breaks the tie of m1 fault in its favour
    assert recording_accuracy(recordings, y_true, y_pred) == (0.75, 4)
