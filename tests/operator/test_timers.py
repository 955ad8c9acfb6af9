"""The timers' turns: `timer_steps` timer steps at most at once; a burst of ticks cannot hold a change up."""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING, cast

from kopf import DaemonStoppingReason
from kopf._core.intents.stoppers import DaemonStopper  # what kopf hands its timers (as `stopped`)

from vibration_operator import handlers
from vibration_operator.settings import OperatorSettings
from vibration_operator.steps import Runtime

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

    await asyncio.gather(
        *(handlers.in_turn(slots, functools.partial(step, i), asyncio.Lock()) for i in range(20))
    )
    assert most == 3
    assert sorted(done) == list(range(20))


def _recording(monkeypatch: pytest.MonkeyPatch, steps: int) -> tuple[Runtime, dict[str, Handler], list[str]]:
    """A runtime with `steps` turns, and its registered handlers, whose steps only record their name."""
    ran: list[str] = []

    async def recorded(_rt: object, _namespace: str, name: str) -> None:
        ran.append(name)

    monkeypatch.setattr(handlers, "reconcile", recorded)
    monkeypatch.setattr(handlers, "check_drift", recorded)
    runtime = Runtime(settings=OperatorSettings(timer_steps=steps), kube=None)  # type: ignore[arg-type]
    registry = handlers.build_registry(runtime)
    # kopf's own registry (testkit/operator_calls.py reads it too): the handlers as kopf calls them.
    found = {str(h.id): cast("Handler", h.fn) for h in registry._spawning.get_all_handlers()}
    found |= {str(h.id): cast("Handler", h.fn) for h in registry._changing.get_all_handlers()}
    return runtime, found, ran


async def test_both_timers_wait_for_a_turn_and_a_change_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, registered, ran = _recording(monkeypatch, steps=2)
    assert runtime.timer_slots._value == 2  # the settings' turns, all free
    for _ in range(2):
        await runtime.timer_slots.acquire()  # a burst of ticks holds every turn
    stopper = DaemonStopper()
    waiting = [
        asyncio.ensure_future(registered[timer](namespace="hall-a", name=timer, stopped=stopper.async_waiter))
        for timer in ("rollout-tick", "drift")
    ]
    await asyncio.wait_for(registered["reconcile"](namespace="hall-a", name="new-model"), timeout=2)
    await asyncio.sleep(0.05)
    assert ran == ["new-model"]  # the change went ahead; the timers still wait
    for _ in range(2):
        runtime.timer_slots.release()
    await asyncio.wait_for(asyncio.gather(*waiting), timeout=5)
    assert sorted(ran) == ["drift", "new-model", "rollout-tick"]


async def test_a_timer_stopped_while_it_waits_for_a_turn_ends_at_once_and_gives_back_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime, registered, ran = _recording(monkeypatch, steps=1)
    await runtime.timer_slots.acquire()  # every turn taken
    stopper = DaemonStopper()
    tick = asyncio.ensure_future(
        registered["rollout-tick"](namespace="hall-a", name="m", stopped=stopper.async_waiter)
    )
    await asyncio.sleep(0.05)
    stopper.set(DaemonStoppingReason.RESOURCE_DELETED)  # what kopf does when the model goes
    await asyncio.wait_for(tick, timeout=1)
    runtime.timer_slots.release()
    assert ran == []
    assert runtime.timer_slots._value == 1  # the stopped waiter took no turn with it


async def test_a_tick_for_a_model_whose_step_runs_already_gives_its_turn_back_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime, registered, ran = _recording(monkeypatch, steps=1)
    async with runtime.lock("hall-a", "m"):  # a change's reconcile of the same model runs
        await asyncio.wait_for(registered["rollout-tick"](namespace="hall-a", name="m"), timeout=1)
        assert runtime.timer_slots._value == 1
    assert ran == []
    await registered["rollout-tick"](namespace="hall-a", name="m")
    assert ran == ["m"]
