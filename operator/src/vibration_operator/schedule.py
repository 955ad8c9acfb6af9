"""Update windows: a tiny 5-field cron matcher, in UTC, with no dependency.

``spec.rollout.updateWindow`` is a cron schedule of the window's start plus a
duration. The operator only needs two questions answered, "is the window
open at `now`?" and "when does it open next?", so a full cron library would
be weight without benefit. Supported per field: ``*``, numbers, ``a-b``
ranges, ``/step`` on either, comma lists, and the English names of months
(``jan``) and weekdays (``mon``); weekday 7 is Sunday like 0. As in Vixie
cron, when both day-of-month and day-of-week are restricted a day matches
if either does. The CRD only checks that there are five fields, so a bad
expression reaches the operator and is refused here with `CronError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from vibration_core.spec import RolloutSpec, UpdateWindow

HoldReason = Literal["Paused", "OutsideUpdateWindow", "InvalidUpdateWindow", "AwaitingApproval"]

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (name, low, high, names mapped to numbers)
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {name: i + 1 for i, name in enumerate(_MONTHS)}),
    ("day of week", 0, 7, {name: i for i, name in enumerate(_DAYS)}),
)
# Feb 29 on a Monday recurs within 28 years at most (with the 2100 gap, 40);
# a schedule that matches nothing in that span never matches.
_SEARCH_DAYS = 366 * 40


class CronError(ValueError):
    """A cron expression this matcher cannot read; the message says which field and why."""

    def __init__(self, expression: str, detail: str) -> None:
        super().__init__(f"invalid cron schedule {expression!r}: {detail}")
        self.expression = expression
        self.detail = detail


@dataclass(frozen=True)
class Cron:
    """A parsed 5-field cron expression: the allowed values of each field."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    """0 is Sunday (7 is folded into 0)."""
    days_restricted: bool
    weekdays_restricted: bool

    @classmethod
    def parse(cls, expression: str) -> Cron:
        """Parse ``minute hour day-of-month month day-of-week``; raises `CronError`."""
        parts = expression.split()
        if len(parts) != len(_FIELDS):
            raise CronError(expression, f"expected 5 fields, got {len(parts)}")
        values = [_parse_field(expression, part, field) for part, field in zip(parts, _FIELDS, strict=True)]
        weekdays = frozenset(0 if day == 7 else day for day in values[4])  # noqa: PLR2004 - 7 is Sunday
        return cls(
            minutes=values[0],
            hours=values[1],
            days=values[2],
            months=values[3],
            weekdays=weekdays,
            days_restricted=not parts[2].startswith("*"),
            weekdays_restricted=not parts[4].startswith("*"),
        )

    def matches_day(self, day: datetime) -> bool:
        """Whether the schedule fires at some time on this date."""
        if day.month not in self.months:
            return False
        in_days = day.day in self.days
        in_weekdays = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_days or in_weekdays  # Vixie cron: either restriction suffices
        return in_days and in_weekdays

    def matches(self, moment: datetime) -> bool:
        """Whether the schedule fires in the minute of `moment`."""
        return moment.minute in self.minutes and moment.hour in self.hours and self.matches_day(moment)

    def next_fire(self, after: datetime) -> datetime | None:
        """The first firing minute at or after `after` (UTC), or None if it never fires."""
        start = _utc(after)
        if start.second or start.microsecond:
            start = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = start.replace(hour=0, minute=0)
        for _ in range(_SEARCH_DAYS):
            if self.matches_day(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        fire = day.replace(hour=hour, minute=minute)
                        if fire >= start:
                            return fire
            day += timedelta(days=1)
        return None


def _parse_field(expression: str, text: str, field: tuple[str, int, int, dict[str, int]]) -> frozenset[int]:
    name, low, high, names = field
    values: set[int] = set()
    for item in text.lower().split(","):
        body, _, step_text = item.partition("/")
        step = _number(expression, step_text, name, names={}) if step_text else 1
        if step < 1:
            raise CronError(expression, f"{name}: step must be at least 1, got {step}")
        if body == "*":
            first, last = low, high
        elif "-" in body:
            first_text, _, last_text = body.partition("-")
            first, last = (_number(expression, t, name, names) for t in (first_text, last_text))
        else:
            first = _number(expression, body, name, names)
            last = high if step_text else first  # "5/15" means from 5 to the end, every 15
        if not low <= first <= last <= high:
            raise CronError(expression, f"{name}: {item!r} is outside {low}-{high} or reversed")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _number(expression: str, text: str, name: str, names: dict[str, int]) -> int:
    if text in names:
        return names[text]
    if not text.isdigit():
        raise CronError(expression, f"{name}: {text!r} is not a number")
    return int(text)


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("the update window needs an aware datetime (UTC)")
    return moment.astimezone(UTC)


def is_open(window: UpdateWindow | None, now: datetime) -> bool:
    """Whether `now` lies in a window: a start at or before `now`, less than `duration` ago.

    No window means always open. Raises `CronError` for a bad schedule.
    """
    if window is None:
        return True
    cron = Cron.parse(window.schedule)
    minute = _utc(now).replace(second=0, microsecond=0)
    # A window of d minutes that started at s covers [s, s + d): look back d - 1 whole minutes.
    return any(cron.matches(minute - timedelta(minutes=back)) for back in range(window.minutes))


def next_open(window: UpdateWindow | None, now: datetime) -> datetime | None:
    """When the window next opens: `now` if it is open, else the next start; None if never.

    Raises `CronError` for a bad schedule.
    """
    if window is None or is_open(window, now):
        return _utc(now)
    return Cron.parse(window.schedule).next_fire(now)


@dataclass(frozen=True)
class Hold:
    """Why a rollout may not change any node's target now."""

    reason: HoldReason
    message: str
    until: datetime | None = None
    """When the window opens next; None when only a spec change ends the hold."""


def awaiting_approval(rollout: RolloutSpec, version: str, canaries: list[str]) -> Hold | None:
    """The hold of a manual rollout whose canaries passed and whose version no one approved yet."""
    if rollout.approval != "manual" or rollout.approved_version == version:
        return None
    on = ", ".join(canaries)
    return Hold(
        "AwaitingApproval",
        f"canaries passed {version} on {on}; awaiting approval: set spec.rollout.approvedVersion to "
        f"{version} (commit it, or kubectl patch vibm <name> --type merge "
        f'-p \'{{"spec":{{"rollout":{{"approvedVersion":"{version}"}}}}}}\')',
    )


def hold(rollout: RolloutSpec, now: datetime) -> Hold | None:
    """Why `rollout` is held at `now` (paused, outside its window, bad window), or None."""
    if rollout.paused:
        return Hold("Paused", "rollout paused (spec.rollout.paused)")
    window = rollout.update_window
    try:
        if is_open(window, now):
            return None
        opens = next_open(window, now)
    except CronError as exc:
        return Hold("InvalidUpdateWindow", str(exc))
    when = opens.isoformat().replace("+00:00", "Z") if opens else "never"
    return Hold("OutsideUpdateWindow", f"outside the update window; it opens next at {when}", opens)
