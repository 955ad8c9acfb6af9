"""Update windows: is ``spec.rollout.updateWindow`` open at `now`, and when does it open next.

The window is a 5-field cron schedule of its start, in UTC, plus a duration. Reading and
stepping the schedule is cronsim's; this module adds the window arithmetic, the holds of a
rollout, and error messages that say which item of which field is wrong (the message ends up
in the Progressing condition, where the user has to find the typo).

Why cronsim rather than croniter (both compared on this spec's dialect and the tests in
``tests/operator/test_conditions.py``):

- dialect: both read what the spec documents (numbers, ``a-b``, ``/step`` on either, comma
  lists, month and weekday names in any case, 7 as Sunday, Vixie cron's "either day field" when
  both are restricted). croniter 7.0 also accepts ``5-1`` (we refuse a reversed range) and reads
  ``7-7`` as every day; cronsim refuses the one and reads the other as Sunday. cronsim also reads
  Debian cron's ``L``, ``LW``, ``5L`` and ``mon#2``, so those work here too.
- errors: cronsim names the field ("Bad minute"); croniter repeats the whole expression
  ("[61 * * * *] is not acceptable, out of range"). Neither says which item or why, so
  `CronError` adds that, for the field cronsim named.
- weight: cronsim is one typed module without dependencies; croniter brings python-dateutil and
  tzdata (over thirty times the wheel bytes) and took about four times as long to import.
- maintenance: both had releases in 2026 (cronsim 2.9, written for and run by Healthchecks;
  croniter 7.0, kept by the Pallets-Eco community and classed Beta).
- time zones: the spec says UTC and every time is converted to UTC before cronsim sees it, where
  it applies no DST rule; were a zone ever added, cronsim follows Debian cron across DST changes.

The CRD only checks that there are five fields, so a bad expression reaches the operator and is
refused here with `CronError`. A schedule whose days never occur in its months (``0 0 30 2 *``)
is not an error: it never fires, and `next_open` says None.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from cronsim import CronSim, CronSimError

if TYPE_CHECKING:
    from vibration_core.spec import RolloutSpec, UpdateWindow

HoldReason = Literal["Paused", "OutsideUpdateWindow", "InvalidUpdateWindow", "AwaitingApproval"]


@dataclass(frozen=True)
class _Field:
    """One field of the expression, as the error messages describe it."""

    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    """Names of the values from `low` on (months, weekdays)."""

    def value(self, text: str) -> int | None:
        """The number a bound stands for, or None when it is neither a number nor a name."""
        if text in self.names:
            return self.low + self.names.index(text)
        return int(text) if text.isdigit() else None

    def problem(self, item: str) -> str | None:
        """Why one comma-separated item is wrong, or None if it reads."""
        body, slash, step = item.partition("/")
        if slash and not (step.isdigit() and int(step) >= 1):
            return f"step must be a number of at least 1 in {item!r}"
        if body == "*":
            return None
        values = [self.value(bound) for bound in body.split("-")]
        numbers = [value for value in values if value is not None]
        if len(numbers) != len(values) or len(numbers) > 2:  # noqa: PLR2004 - a range has two bounds
            return f"{item!r} is not a number, a name or a range"
        if not all(self.low <= number <= self.high for number in numbers):
            return f"{item!r} is outside {self.low}-{self.high}"
        return f"{item!r} is reversed" if numbers != sorted(numbers) else None


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day of week", 0, 7, _DAYS),
)
_ANY_TIME = datetime(2000, 1, 1, tzinfo=UTC)  # cronsim reads the expression when given a start


class CronError(ValueError):
    """A cron expression that cannot be read; the message says which field and why."""

    def __init__(self, expression: str, detail: str) -> None:
        super().__init__(f"invalid cron schedule {expression!r}: {detail}")
        self.expression = expression
        self.detail = detail


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("the update window needs an aware datetime (UTC)")
    return moment.astimezone(UTC)


def _minute(moment: datetime) -> datetime:
    return _utc(moment).replace(second=0, microsecond=0)


@dataclass(frozen=True)
class Cron:
    """A 5-field cron expression that cronsim reads, or one that never fires."""

    expression: str
    never: bool = False
    """Its days never occur in its months (cronsim refuses those; they are valid cron)."""

    @classmethod
    def parse(cls, expression: str) -> Cron:
        """Check ``minute hour day-of-month month day-of-week``; raises `CronError`."""
        parts = expression.split()
        if len(parts) != len(_FIELDS):  # cronsim would also take six, the first being seconds
            raise CronError(expression, f"expected 5 fields, got {len(parts)}")
        try:
            CronSim(expression, _ANY_TIME)
        except CronSimError as exc:
            problem = _problem(parts, str(exc))
            if problem is None:  # every item reads: its days never fall in its months
                return cls(expression, never=True)
            raise CronError(expression, problem) from exc
        return cls(expression)

    def next_fire(self, after: datetime) -> datetime | None:
        """The first firing minute at or after `after` (UTC), or None if it never fires."""
        if self.never:
            return None
        # cronsim yields the fires strictly after its start: a microsecond back includes `after`.
        return next(CronSim(self.expression, _utc(after) - timedelta(microseconds=1)), None)

    def matches(self, moment: datetime) -> bool:
        """Whether the schedule fires in the minute of `moment`."""
        minute = _minute(moment)
        return self.next_fire(minute) == minute


def _problem(parts: list[str], refusal: str) -> str | None:
    """What is wrong in the field cronsim refused ("Bad minute"); None: days that never occur."""
    where = refusal.removeprefix("Bad ").replace("-", " ")
    index = next((i for i, field in enumerate(_FIELDS) if field.name == where), None)
    if index is None:
        return refusal
    field = _FIELDS[index]
    for item in parts[index].lower().split(","):
        problem = field.problem(item)
        if problem is not None:
            return f"{field.name}: {problem}"
    # cronsim refuses a day of month that none of the months has; that is cron that never fires.
    return None if field.name == "day of month" else f"{field.name}: {parts[index]!r} is not valid"


def is_open(window: UpdateWindow | None, now: datetime) -> bool:
    """Whether `now` lies in a window: a start at or before `now`, less than `duration` ago.

    No window means always open. Raises `CronError` for a bad schedule.
    """
    if window is None:
        return True
    minute = _minute(now)
    # A window of d minutes that started at s covers [s, s + d): a start in the last d minutes.
    start = Cron.parse(window.schedule).next_fire(minute - timedelta(minutes=window.minutes - 1))
    return start is not None and start <= minute


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
    if not needs_approval(rollout, version):
        return None
    return Hold("AwaitingApproval", f"canaries passed {version} on {', '.join(canaries)}; {_ask(version)}")


def awaiting_approval_alone(rollout: RolloutSpec, version: str, node: str) -> Hold | None:
    """The hold of a manual rollout in a hall of one node: asked before it, as no canary can go first."""
    if not needs_approval(rollout, version):
        return None
    said = f"{version} goes to {node}, the hall's only node, once approved (no canary can try it first)"
    return Hold("AwaitingApproval", f"{said}; {_ask(version)}")


def needs_approval(rollout: RolloutSpec, version: str) -> bool:
    """Whether `version` waits for a person: a manual rollout that has not approved it."""
    return rollout.approval == "manual" and rollout.approved_version != version


def _ask(version: str) -> str:
    return (
        f"awaiting approval: set spec.rollout.approvedVersion to {version} (commit it, or kubectl patch "
        f'vibm <name> --type merge -p \'{{"spec":{{"rollout":{{"approvedVersion":"{version}"}}}}}}\')'
    )


def window_problem(window: UpdateWindow | None) -> str:
    """Why `window` can never open: a schedule that does not read, or whose days never occur; else ''."""
    if window is None:
        return ""
    try:
        cron = Cron.parse(window.schedule)
    except CronError as exc:
        return str(exc)
    return (
        f"update window {window.schedule!r} never opens: its days never occur in its months"
        if cron.never
        else ""
    )


def hold(rollout: RolloutSpec, now: datetime) -> Hold | None:
    """Why `rollout` is held at `now` (paused, outside its window, a window that never opens), or None."""
    if rollout.paused:
        return Hold("Paused", "rollout paused (spec.rollout.paused)")
    window = rollout.update_window
    problem = window_problem(window)
    if problem:
        return Hold("InvalidUpdateWindow", problem)
    if is_open(window, now):
        return None
    opens = next_open(window, now)
    when = opens.isoformat().replace("+00:00", "Z") if opens else "never"
    return Hold("OutsideUpdateWindow", f"outside the update window; it opens next at {when}", opens)
