"""The serving bench's figures: each serve system beside the reference design, and where the time goes.

`bench_serve.py` measures (`Loads` of each system); this module turns the
measurements into `bench_record.Figure` rows with their targets and, in the
baseline column, the reference design's figure from the same run and the ratio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench_record import Figure
from bench_serve_parts import best_load

if TYPE_CHECKING:
    from collections.abc import Sequence

    from bench_profile import Profile
    from bench_serve_parts import Load

BEFORE = (
    "before (commit 327af77, py-spy on serve at 300 windows/s): about 630 us of CPU a window; two "
    "busy threads per window (the MQTT thread read and queued, the batcher woke, answered and wrote) "
    "passed the GIL between them, and the batcher spent a fifth of its running time in send_all, "
    "waiting for the GIL back; the batch work of one window (decode, features, a one-row model call, "
    "the answer, drift, metrics) was about half"
)
SHOWN_SHARE = 0.005
"""Libraries with less of serve's CPU time than this are left out of the note."""
SESSION_AB = (
    "the hall load before the one-window extractor path and the lighter per-window bookkeeping "
    "(724e38d) and after (904fe06), alternated on one probe, three runs each (scratch probe, the bench's "
    "layout): CPU a window before 637, 613, 817 us; after 553, 543, 517 us; a 20 000-window binary flood, "
    "two runs each: before 100, 98 us a window, after 101, 98 us"
)
RSS_NOTE = (
    "RSS after the flood: Debian 12's Mosquitto 2.0.11 ignores the pod's Receive Maximum once inputs are "
    "acknowledged (fixed in 2.0.13; the chart ships 2.0.21), so in a 20 000-window flood up to 21 758 "
    "answers waited at once for their turn among the broker's 20 in flight (scratch probe on Outbound), "
    "about 0.7 KB of small Python objects each; after the flood pymalloc held 38 arenas of 1 MB (23 at "
    "idle), 923 of their pools (15 MB) free but not returnable, each arena pinned by a few live objects "
    "(sys._debugmallocstats in serve)"
)
P99_AB = (
    "p99 at 500 windows/s, serve before the hall-load work (327af77) and after (0705a22) alternated on one "
    "probe, three runs each (scratch probe, the bench's layout): before 2.08, 2.22, 2.42 ms; after 1.87, "
    "2.16, 1.11 ms; CPU a window 572-592 us before, 526-576 us after"
)
LAZY_AB = (
    "the hall load before the socket's low-water mark for the answers' PUBACKs (40bd4ae) and after "
    "(5f42703), alternated on one probe, three runs each (scratch probe, the bench's layout): CPU a window "
    "before 597, 593, 600 us, p99 1.53, 1.23, 1.35 ms; after 577, 537, 593 us, p99 1.37, 1.51, 1.28 ms"
)
HOLD_AB = (
    "the hall load under a batch deadline before the hold's low-water mark (bd7058e: each window that came "
    "while a batch waited woke the pod) and after (ab5fbd3: they lie in the socket until the batch could be "
    "full or is due, and the inputs' PUBACKs go on the wake-up that read their answers' PUBACKs): 1 500 "
    "windows at 50 ms under strace, 1 694 polls and 1 511 reads before, 278 and 267 after; CPU a window, "
    "alternated on one probe, two runs each (scratch probe, the bench's layout; noisy, the ranges overlap "
    "at 20 ms): 20 ms, before 273, 290 us, after 263, 200 us; 50 ms, before 273, 200 us, after 197, 167 us; "
    "p99 the deadline's in both"
)

# (target key, label, which load, which figure, unit, whether more is better)
ROWS = (
    ("rate", "flood, windows/s answered", "flood", "rate", "", True),
    ("capacity", "flood, windows/s a whole core would answer", "flood", "capacity", "", True),
    ("flood_us", "flood, CPU per window", "flood", "cpu_us", " us", False),
    # Below 100 %, the broker and the load generator on the other core set the flood's pace, not serve.
    ("flood_pct", "flood, CPU of one core", "flood", "cpu_pct", " %", False),
    ("flood_others", "flood, the other core busy (broker, sensors)", "flood", "others_pct", " %", False),
    ("p99_500", "500 windows/s, p99 publish to answer", "paced", "p99_ms", " ms", False),
    ("pct_500", "500 windows/s, CPU of one core", "paced", "cpu_pct", " %", False),
    ("hall_us", "hall load (300/s), CPU per window", "hall", "cpu_us", " us", False),
    ("hall_pct", "hall load, CPU of one core", "hall", "cpu_pct", " %", False),
    ("hall_p99", "hall load, p99 publish to answer", "hall", "p99_ms", " ms", False),
)


PACE_ROWS = frozenset({"flood_pct", "flood_others"})
"""Figures that say who set a flood's pace, not who did better: beside the reference's with no ratio."""


@dataclass(frozen=True)
class Loads:
    """One system's flood, 500 windows/s and hall load."""

    flood: Load
    paced: Load
    hall: Load
    runs: tuple[Loads, ...] = ()
    """The runs these figures are the best of (`best_of`); empty for a single run."""

    @classmethod
    def best_of(cls, runs: Sequence[Loads]) -> Loads:
        """Each load's least disturbed run of `runs` (`best_load`), keeping the runs for `spread_note`."""
        return cls(
            flood=best_load([run.flood for run in runs]),
            paced=best_load([run.paced for run in runs]),
            hall=best_load([run.hall for run in runs]),
            runs=tuple(runs),
        )


def ratio(ours: float, theirs: float, *, more_is_better: bool) -> str:
    """How many times better (or worse) than the reference design."""
    if not (ours > 0 and theirs > 0):
        return "no ratio"
    times = ours / theirs if more_is_better else theirs / ours
    return f"{times:.1f} x better" if times >= 1 else f"{1 / times:.1f} x worse"


def unanswered(load: Load) -> str:
    """A warning to append when some windows were never answered."""
    return "" if load.complete else " (INCOMPLETE: windows unanswered)"


def _shown(value: float, unit: str) -> str:
    return f"{value:.{2 if unit == ' ms' else 0}f}{unit}"


def system_figures(name: str, ours: Loads, ref: Loads, targets: dict[str, tuple[str, float]]) -> list[Figure]:
    """The figures of one serve system, each beside the reference design's and the ratio."""
    out = []
    for key, label, which, attr, unit, more_is_better in ROWS:
        load: Load = getattr(ours, which)
        mine, theirs = getattr(load, attr), getattr(getattr(ref, which), attr)
        text, bound = targets.get(key, ("", float("nan")))
        met = None if not text else bool(mine >= bound if more_is_better else mine <= bound)
        # A flood's share of a core says who set the pace, not who did better: no verdict.
        compared = "" if key in PACE_ROWS else f" ({ratio(mine, theirs, more_is_better=more_is_better)})"
        baseline = f"{_shown(theirs, unit)}{compared}"
        out.append(Figure(f"{name}: {label}", _shown(mine, unit) + unanswered(load), text, baseline, met))
    return out


def coalescing_figures(coalesced: dict[int, Load], ref: Loads, target: tuple[str, float]) -> list[Figure]:
    """The hall load with windows held back for company: CPU per window against latency.

    Judged against the hall's CPU target alone: the p99 beside it is the deadline's, past the
    hall's 2 ms by choice (the trade a fanless gateway may make).
    """
    text, bound = target
    out = []
    for deadline_ms, load in coalesced.items():
        compared = ratio(load.cpu_us, ref.hall.cpu_us, more_is_better=False)
        out.append(
            Figure(
                f"serve, binary windows, --batch-deadline-ms={deadline_ms}: hall load, CPU per window, p99",
                f"{load.cpu_us:.0f} us ({load.cpu_pct:.0f} % of one core), p99 {load.p99_ms:.1f} ms"
                + unanswered(load),
                f"{text} (the p99 is the deadline's)",
                baseline=f"{ref.hall.cpu_us:.0f} us ({compared})",
                met=load.cpu_us <= bound,
            )
        )
    return out


def profile_notes(profile: Profile | None, libraries: list[tuple[str, float]] | None) -> list[str]:
    """The profile's largest shares, where the CPU went by library, and the profile before, as notes."""
    if profile is None:
        notes = ["profile: py-spy could not attach to serve (ptrace not permitted here)"]
    else:
        shares = ", ".join(f"{name.split(' ')[0]} {share:.0%}" for name, share in profile.top(14))
        notes = [
            (
                f"after (this run, py-spy on serve at 300 windows/s; of {profile.samples} samples in which "
                f"serve ran Python, the share under each function): {shares}"
            )
        ]
    if libraries is None:
        notes.append("by library: perf is not installed here, or may not sample serve")
    else:
        shares = ", ".join(f"{name} {share:.0%}" for name, share in libraries if share >= SHOWN_SHARE)
        notes.append(
            f"by library (this run, perf on serve at 300 windows/s, a run of its own; its share of serve's "
            f"CPU time): {shares}"
        )
    return [*notes, BEFORE, SESSION_AB, P99_AB, LAZY_AB, HOLD_AB, RSS_NOTE]


LONG_TERM_RATE = 20000
"""Binary windows a second on one core: issue 17's long-term aim."""


def spread_note(name: str, loads: Loads) -> str:
    """The main figures of each run the tables' run was chosen from, so the page shows the host's swing."""

    def each(loads_of: Sequence[Load], attr: str, unit: str) -> str:
        return " / ".join(_shown(getattr(load, attr), unit) + unanswered(load) for load in loads_of)

    runs = loads.runs or (loads,)
    floods, paced, halls = ([getattr(run, which) for run in runs] for which in ("flood", "paced", "hall"))
    return (
        f"{name}, each of {len(runs)} runs (the tables give the one with the least CPU a window): flood "
        f"{each(floods, 'cpu_us', ' us')} a window, {each(floods, 'rate', '')} windows/s answered; "
        f"500 windows/s, {each(paced, 'cpu_us', ' us')} a window, p99 {each(paced, 'p99_ms', ' ms')}; "
        f"hall load {each(halls, 'cpu_us', ' us')} a window, p99 {each(halls, 'p99_ms', ' ms')}"
    )


def reference_note(ref: Loads) -> str:
    """What the reference design did, in words."""
    return (
        f"reference design: flood {ref.flood.rate:.0f} windows/s; at 500 windows/s it answered "
        f"{ref.paced.rate:.0f}/s{unanswered(ref.paced)} (p50 {ref.paced.p50_ms:.0f} ms); at 300/s it "
        f"used {ref.hall.cpu_pct:.0f} % of one core; its CPU counts the flow and its inference server"
    )


def flood_note(link_rate: float) -> str:
    """What a flood's two rates say, with the rate serve's link alone answered in this run."""
    return (
        "a flood's two rates: windows/s answered is the pace the two cores kept together, serve on one and, "
        "on the other, the broker, the sensor publishing and the collector; a whole core's is 1 s over "
        "serve's CPU per window, what serve would answer with its core to itself and a broker that kept up. "
        f"Serve's MQTT link alone, with no model, answered {link_rate:.0f} windows/s in this run: the other "
        "core's pace is this layout's ceiling, whatever serve computes, so the 10 000 a second on one core "
        "(issue 17) is judged on the whole core's rate. Where serve's core stays below 100 % while the other "
        "core is near it, the other core set the pace"
    )


def long_term_note(batch_us: float, link_us: float, capacities: tuple[float, float]) -> str:
    """What stands in the way of 20 000 binary windows a second on one core, from a run's figures.

    `batch_us`: serve's batch work alone in batches of 64; `link_us`: its MQTT link alone in a
    flood; `capacities`: the whole-core rate of serve's flood on ONNX Runtime and on LiteRT.
    """
    budget = 1e6 / LONG_TERM_RATE
    onnx, litert = capacities

    def against(us: float) -> str:
        return "over the budget by itself" if us > budget else "within it"

    lighter = (
        f"; the INT8 LiteRT model, a lighter one, gave {litert:.0f} against {onnx:.0f}"
        if litert > onnx
        else f"; the INT8 LiteRT model gave no more here ({litert:.0f} against {onnx:.0f})"
    )
    return (
        f"{LONG_TERM_RATE:,}".replace(",", " ")
        + f" windows/s on one core (the long-term aim) is {budget:.0f} us a window: in this "
        f"run serve's batch work alone (decode, features, model, answers, drift; no MQTT) took "
        f"{batch_us:.0f} us a window in batches of 64, {against(batch_us)}, and its MQTT link alone "
        f"(a PUBLISH in and one out and their PUBACKs, in Python; no model) {link_us:.0f} us, "
        f"{against(link_us)}: {(batch_us + link_us) / budget:.1f} x the budget together{lighter}"
    )


def hall_note(
    floor_us: tuple[float, float, float],
    one_window_us: tuple[float, float],
    serve_us: float,
    target_us: float,
) -> str:
    """What stands between serve and the hall's target a window on this machine, from a run's figures.

    `floor_us`: `host_floor`'s three figures; `one_window_us`: serve's batch work for one window,
    back to back and with a hall's gap asleep before each (`compute_floor`); `serve_us`: serve's
    CPU a window at the hall's load.
    """
    bare, _, computed = floor_us
    back_to_back, asleep = one_window_us
    floor = (
        f"the hall's {target_us:.0f} us a window: with no serve and no MQTT, a window woken for every "
        f"3.3 ms, read, decoded, its features computed, the model called once and 120 bytes written back "
        f"cost this machine {computed:.0f} us CPU in this run ({bare:.0f} us without the decode, features "
        f"and model call)"
    )
    if computed <= target_us:
        return (
            f"{floor}. That floor leaves {target_us - computed:.0f} us a window for serve's MQTT link, "
            f"the answers, drift and metrics"
        )
    colder = (
        f" The same work costs more after a wait here: serve's batch work for one window took "
        f"{back_to_back:.0f} us back to back and {asleep:.0f} us with 3.3 ms asleep before each (the "
        f"model call's own figures are above)."
        if asleep > back_to_back
        else ""
    )
    above = (
        f" Serve took {serve_us:.0f} us a window at the hall's load, {serve_us - computed:.0f} over that "
        f"floor: its MQTT link, the answers, drift and metrics."
        if serve_us > computed
        else f" Serve took {serve_us:.0f} us a window at the hall's load, no more than that floor."
    )
    return (
        f"{floor}, past the target before serve's own work.{colder} So with this model, numpy's features "
        f"and ONNX Runtime, no serve that waits for each window can meet the target on this machine, by "
        f"this run's floor.{above} A deadline (--batch-deadline-ms) shares the wake-ups among windows, "
        f"where a hall can wait for its answers"
    )
