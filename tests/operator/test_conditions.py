"""Conditions and history bookkeeping, and the update window (cron read by cronsim)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vibration_core.spec import UpdateWindow
from vibration_core.status import HistoryEntry
from vibration_operator.conditions import (
    CONDITION_TYPES,
    ConditionType,
    append_history,
    get_condition,
    set_condition,
)
from vibration_operator.node_state import NodeObservation
from vibration_operator.rollout import decide
from vibration_operator.schedule import Cron, CronError, is_open, next_open
from vibration_testkit.specs import make_spec

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_all_five_conditions_are_set_from_the_first_reconcile() -> None:
    decision = decide("spindle-classifier", make_spec("v1"), 1, None, [NodeObservation("edge-1")], T0)
    conditions = decision.status.conditions
    assert [c.type for c in conditions] == list(CONDITION_TYPES)
    assert all(c.reason and c.observed_generation == 1 and c.last_transition_time == T0 for c in conditions)
    assert get_condition(conditions, "Drifted").status == "Unknown"  # type: ignore[union-attr]
    assert get_condition(conditions, "Progressing").status == "True"  # type: ignore[union-attr]


def test_no_selected_node_says_so() -> None:
    status = decide("spindle-classifier", make_spec("v1"), 1, None, [], T0).status
    assert status.phase == "Pending"
    ready = get_condition(status.conditions, "Ready")
    assert ready is not None
    assert (ready.status, ready.reason) == ("False", "NoNodes")


@pytest.mark.parametrize(
    ("unavailable", "message"),
    [
        (3, "3 nodes match spec.nodeSelector but none is Ready and schedulable"),
        (1, "1 node matches spec.nodeSelector but it is not Ready and schedulable"),
    ],
)
def test_matching_nodes_that_are_all_down_are_no_missing_selector(unavailable: int, message: str) -> None:
    # A power cut: the hall's gateways match but are NotReady (and hold no pod of ours yet).
    status = decide("spindle-classifier", make_spec("v1"), 1, None, [], T0, unavailable=unavailable).status
    assert status.phase == "Pending"
    said: dict[ConditionType, str] = {"Ready": "False", "Progressing": "False", "Degraded": "True"}
    for type_, state in said.items():
        found = get_condition(status.conditions, type_)
        assert found is not None
        assert (found.status, found.reason, found.message) == (state, "NoReadyNodes", message)


def test_transition_time_moves_only_when_status_changes() -> None:
    first = set_condition([], "Ready", "False", "RolloutInProgress", "0/3", generation=1, now=T0)
    later = T0 + timedelta(minutes=5)
    reworded = set_condition(first, "Ready", "False", "RolloutInProgress", "2/3", generation=2, now=later)
    assert reworded[0].last_transition_time == T0
    assert (reworded[0].message, reworded[0].observed_generation) == ("2/3", 2)
    flipped = set_condition(reworded, "Ready", "True", "AllNodesServing", "3/3", generation=2, now=later)
    assert flipped[0].last_transition_time == later


def test_conditions_keep_their_order_and_one_entry_per_type() -> None:
    conditions = set_condition([], "Drifted", "False", "NoDrift", "", generation=1, now=T0)
    conditions = set_condition(conditions, "Ready", "True", "AllNodesServing", "", generation=1, now=T0)
    conditions = set_condition(conditions, "Drifted", "True", "DriftDetected", "", generation=1, now=T0)
    assert [c.type for c in conditions] == ["Ready", "Drifted"]


def test_history_keeps_the_newest_ten() -> None:
    entries = [HistoryEntry(action="Promoted", version=f"v{n}", at=T0) for n in range(15)]
    history = append_history(entries[:9], *entries[9:])
    assert [h.version for h in history] == [f"v{n}" for n in range(5, 15)]


# --- the update window's schedule -----------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "moment", "fires"),
    [
        ("0 22 * * *", datetime(2026, 11, 24, 22, 0, tzinfo=UTC), True),
        ("0 22 * * *", datetime(2026, 11, 24, 22, 1, tzinfo=UTC), False),
        ("*/15 * * * *", datetime(2026, 11, 24, 3, 45, tzinfo=UTC), True),
        ("*/15 * * * *", datetime(2026, 11, 24, 3, 50, tzinfo=UTC), False),
        ("5/20 * * * *", datetime(2026, 11, 24, 3, 45, tzinfo=UTC), True),
        ("0 1-5/2 * * *", datetime(2026, 11, 24, 3, 0, tzinfo=UTC), True),
        ("0 1-5/2 * * *", datetime(2026, 11, 24, 4, 0, tzinfo=UTC), False),
        ("0 0,12 * * *", datetime(2026, 11, 24, 12, 0, tzinfo=UTC), True),
        ("0 0 * * sat,sun", datetime(2026, 11, 29, 0, 0, tzinfo=UTC), True),  # a Sunday
        ("0 0 * * 7", datetime(2026, 11, 29, 0, 0, tzinfo=UTC), True),  # 7 is Sunday too
        ("0 0 * * 1-5", datetime(2026, 11, 29, 0, 0, tzinfo=UTC), False),
        ("0 0 * dec *", datetime(2026, 12, 1, 0, 0, tzinfo=UTC), True),
        # Both day fields restricted: either matches (Vixie cron).
        ("0 0 1 * mon", datetime(2026, 11, 30, 0, 0, tzinfo=UTC), True),  # a Monday, not the 1st
        ("0 0 1 * mon", datetime(2026, 11, 29, 0, 0, tzinfo=UTC), False),
        # Only day of month restricted: the weekday does not matter.
        ("0 0 1 * *", datetime(2026, 12, 1, 0, 0, tzinfo=UTC), True),
        ("0 0 * * 7-7", datetime(2026, 11, 29, 0, 0, tzinfo=UTC), True),  # Sunday, not every day
        ("0 0 * * 7-7", datetime(2026, 11, 30, 0, 0, tzinfo=UTC), False),
        ("0 0 * * MON-Fri", datetime(2026, 11, 30, 0, 0, tzinfo=UTC), True),  # names in any case
        # Debian cron's extensions, which cronsim reads: the last day of the month, the 2nd Monday.
        ("0 0 L * *", datetime(2026, 11, 30, 0, 0, tzinfo=UTC), True),
        ("0 0 * * mon#2", datetime(2026, 12, 14, 0, 0, tzinfo=UTC), True),
        ("0 0 * * mon#2", datetime(2026, 12, 7, 0, 0, tzinfo=UTC), False),
    ],
)
def test_cron_matches(*, expression: str, moment: datetime, fires: bool) -> None:
    assert Cron.parse(expression).matches(moment) is fires


@pytest.mark.parametrize(
    ("expression", "detail"),
    [
        ("0 22 * *", "expected 5 fields"),
        ("61 * * * *", "minute"),
        ("0 24 * * *", "hour"),
        ("0 0 0 * *", "day of month"),
        ("0 0 * 13 *", "month"),
        ("0 0 * * 8", "day of week"),
        ("*/0 * * * *", "step"),
        ("5-1 * * * *", "reversed"),
        ("x * * * *", "not a number"),
        ("0 0 * * * *", "expected 5 fields"),  # cronsim would read six, the first as seconds
        ("0 0 1-2-3 * *", "day of month: '1-2-3' is not a number"),
        ("0 0 * * mon,8", "day of week: '8' is outside 0-7"),  # the item, not the whole field
    ],
)
def test_cron_refuses_bad_expressions(expression: str, detail: str) -> None:
    with pytest.raises(CronError, match=detail):
        Cron.parse(expression)


def test_the_error_names_the_expression_the_field_and_the_item() -> None:
    with pytest.raises(CronError) as caught:
        Cron.parse("61 22 * * *")
    assert str(caught.value) == "invalid cron schedule '61 22 * * *': minute: '61' is outside 0-59"


def test_next_fire_counts_the_start_minute_only_from_its_first_second() -> None:
    cron = Cron.parse("0 22 * * *")
    at = datetime(2026, 11, 24, 22, 0, tzinfo=UTC)
    assert cron.next_fire(at) == at
    assert cron.next_fire(at + timedelta(seconds=30)) == at + timedelta(days=1)
    assert cron.next_fire(at - timedelta(microseconds=1)) == at


def test_window_open_across_midnight_and_next_opening() -> None:
    window = UpdateWindow(schedule="0 22 * * *", duration="3h")
    assert is_open(window, datetime(2026, 11, 24, 22, 0, tzinfo=UTC))
    assert is_open(window, datetime(2026, 11, 25, 0, 59, 59, tzinfo=UTC))
    assert not is_open(window, datetime(2026, 11, 25, 1, 0, tzinfo=UTC))
    assert not is_open(window, datetime(2026, 11, 24, 21, 59, tzinfo=UTC))
    assert next_open(window, datetime(2026, 11, 25, 1, 0, tzinfo=UTC)) == datetime(
        2026, 11, 25, 22, 0, tzinfo=UTC
    )
    inside = datetime(2026, 11, 24, 23, 0, tzinfo=UTC)
    assert next_open(window, inside) == inside
    assert is_open(None, inside)


def test_next_opening_far_away_or_never() -> None:
    leap = UpdateWindow(schedule="0 0 29 2 *", duration="1h")
    assert next_open(leap, datetime(2026, 11, 24, tzinfo=UTC)) == datetime(2028, 2, 29, tzinfo=UTC)
    never = UpdateWindow(schedule="0 0 30 2 *", duration="1h")
    assert next_open(never, datetime(2026, 11, 24, tzinfo=UTC)) is None


def test_window_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="aware"):
        is_open(UpdateWindow(schedule="* * * * *", duration="1m"), datetime(2026, 11, 24))  # noqa: DTZ001
