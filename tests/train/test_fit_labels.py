"""Tables from elsewhere: integer class labels (however written) and integer timestamps (by their size)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from vibration_train.data import TrainingTable
from vibration_train.errors import TrainingDataError
from vibration_train.fit_labels import name_classes

NAMES = ("normal", "imbalance", "misalignment", "bearing_fault")


def table(labels: list[str]) -> TrainingTable:
    return TrainingTable(
        source="t.parquet",
        features=np.zeros((len(labels), 10), dtype=np.float32),
        labels=np.asarray(labels),
        machines=None,
        timestamps_ns=None,
        sample_rate=25600.0,
        window_length=4096,
        modified=datetime(2026, 1, 1, tzinfo=UTC),
        unit="g",
    )


@pytest.mark.parametrize(
    "written",
    [["0", "1", "2", "3"], ["00", "01", "02", "03"], ["0.0", "1.0", "2.0", "3.0"], ["1", "2", "3", "4"]],
    ids=["plain", "zero-padded", "float", "from-one"],
)
def test_integer_labels_take_the_names_in_order_however_written(written: list[str]) -> None:
    named, read_as = name_classes(table([*written, written[3], written[0]]), NAMES)
    assert named.labels.tolist() == [*NAMES, "bearing_fault", "normal"]
    assert list(read_as) == written
    with pytest.raises(
        TrainingDataError, match=r"the labels are integers \(\d, \d, \d, \d\): name the classes"
    ):
        name_classes(table(written), None)


def test_names_stay_names_and_one_integer_written_twice_is_refused() -> None:
    assert name_classes(table(["normal", "imbalance"]), None)[1] == {}
    with pytest.raises(TrainingDataError, match="names already"):
        name_classes(table(["normal", "imbalance"]), ("a", "b"))
    with pytest.raises(TrainingDataError, match="one integer in several ways"):
        name_classes(table(["0", "0.0", "1"]), ("a", "b"))


def test_integer_timestamps_past_what_ns_can_hold_are_refused() -> None:
    from vibration_train.data_columns import _integer_ns  # noqa: PLC0415 - the one private helper tested here

    assert _integer_ns("t", np.array([1_700_000_000], dtype=np.int64)).tolist() == [1_700_000_000 * 10**9]
    with pytest.raises(TrainingDataError, match="past 2262 read as s since the epoch"):
        _integer_ns("t", np.array([1_700_000_000, 20_000_000_000], dtype=np.int64))


@pytest.mark.parametrize("written", [["1_0", "2"], ["\u0663", "1"], ["1e3", "2e3"], ["True", "False"]])
def test_what_python_reads_as_a_number_but_a_table_does_not_write_as_an_integer_is_a_name(
    written: list[str],
) -> None:
    assert name_classes(table(written), None)[1] == {}
