"""The timers' turns: `TIMER_STEPS` timer steps at most at once; a burst of ticks cannot hold a change up."""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING, cast

from vibration_operator import handlers
from vibration_operator.settings import OperatorSettings

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    import pytest

    Handler = Callable[..., Coroutine[None, None, None]]


async def test_timer_steps_take_turns_and_every_one_runs() -> None:
    slots = asyncio.Semaphore(3)
    running, most, done = 0, 0, []

    async def step(i: int) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1
        done.append(i)

    await asyncio.gather(*(handlers.in_turn(slots, functools.partial(step, i)) for i in range(20)))
    assert most == 3
    assert sorted(done) == list(range(20))


async def test_both_timers_wait_for_a_turn_and_a_change_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []

    async def recorded(_rt: object, _namespace: str, name: str) -> None:
        ran.append(name)

    monkeypatch.setattr(handlers, "reconcile", recorded)
    monkeypatch.setattr(handlers, "check_drift", recorded)
    runtime = handlers.Runtime(settings=OperatorSettings(), kube=None)  # type: ignore[arg-type]  # unused
    registry = handlers.build_registry(runtime)
    # kopf's own registry: the handlers as kopf calls them, with keyword arguments.
    timers = {str(h.id): cast("Handler", h.fn) for h in registry._spawning.get_all_handlers()}
    changes = {str(h.id): cast("Handler", h.fn) for h in registry._changing.get_all_handlers()}
    for _ in range(handlers.TIMER_STEPS):
        await runtime.timer_slots.acquire()  # a burst of ticks holds every turn
    waiting = [
        asyncio.ensure_future(timers[timer](namespace="hall-a", name=timer))
        for timer in ("rollout-tick", "drift")
    ]
    await changes["reconcile"](namespace="hall-a", name="new-model")
    await asyncio.sleep(0.05)
    assert ran == ["new-model"]  # the change went ahead; the timers still wait
    for _ in range(handlers.TIMER_STEPS):
        runtime.timer_slots.release()
    await asyncio.wait_for(asyncio.gather(*waiting), timeout=5)
    assert sorted(ran) == ["drift", "new-model", "rollout-tick"]


async def test_a_step_stopped_while_waiting_for_its_turn_never_starts() -> None:
    slots = asyncio.Semaphore(1)
    await slots.acquire()  # every turn taken
    started: list[str] = []

    async def step() -> None:
        started.append("step")

    waiting = asyncio.ensure_future(handlers.in_turn(slots, step))
    await asyncio.sleep(0.01)
    waiting.cancel()  # what `unless_stopped` does when kopf stops the timer
    await asyncio.gather(waiting, return_exceptions=True)
    slots.release()
    assert started == []
    assert not slots.locked()  # the cancelled waiter took no turn with it


def test_the_runtime_gives_the_timers_timer_steps_turns() -> None:
    runtime = handlers.Runtime(settings=None, kube=None)  # type: ignore[arg-type]  # only the slots are read
    assert runtime.timer_slots._value == handlers.TIMER_STEPS  # the semaphore's free turns
