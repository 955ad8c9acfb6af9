"""status.drift and the Drifted condition from the pods' figures, as a real drift monitor writes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from vibration_core.drift_monitor import DriftMonitor, DriftPolicy
from vibration_core.messages import ModelStatus
from vibration_core.reference import ReferenceDistribution, build_reference
from vibration_core.spec import DriftSpec
from vibration_core.status import VibrationModelStatus
from vibration_operator.conditions import get_condition
from vibration_operator.drift_status import CHECKED_AT_REFRESH, apply_drift, only_checked_at_moved
from vibration_operator.observe import silent_ready

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SPEC = DriftSpec()
LABELS = ("a", "b")


def _reference() -> ReferenceDistribution:
    rng = np.random.default_rng(0)
    labels = np.where(rng.random(10_000) < 0.5, "a", "b")
    return build_reference(rng.random((10_000, 2)), labels, feature_names=("x", "y"), label_order=LABELS)


def _probabilities(rng: np.random.Generator, share_a: float) -> np.ndarray:
    a = rng.random(200) < share_a
    return np.column_stack([np.where(a, 0.9, 0.1), np.where(a, 0.1, 0.9)])


def _pod(
    node: str, *, x_shift: float = 0.0, share_a: float = 0.5, baseline: int = 200, evaluations: int = 1
) -> ModelStatus:
    """A pod's status after a real monitor, with the spec's policy, saw a clean baseline and then windows."""
    policy = DriftPolicy(
        window=200,
        min_samples=200,
        evaluate_every=200,
        feature_psi=SPEC.feature_psi,
        class_psi=SPEC.class_psi,
        p_value=SPEC.p_value,
        baseline_windows=baseline,
        raise_after=SPEC.raise_after,
        clear_after=SPEC.clear_after,
    )
    monitor = DriftMonitor(_reference(), LABELS, policy)
    rng = np.random.default_rng(len(node))
    monitor.update(rng.random((200, 2)), _probabilities(rng, 0.5))
    for _ in range(evaluations):
        rows = rng.random((200, 2))
        rows[:, 0] = rows[:, 0] * (1 - x_shift) + x_shift
        monitor.update(rows, _probabilities(rng, share_a))
        report = monitor.report()
    return ModelStatus(
        node=node,
        state="serving",
        ready=True,
        windows_total=200 * (evaluations + 1),
        errors_total=0,
        drift=report.as_flat(),
        drifted=report.drifted,
        updated_ns=1,
    )


def test_the_condition_names_the_test_its_effect_its_p_value_and_the_thresholds() -> None:
    status = VibrationModelStatus(observed_generation=3)
    reports = {"edge-1": _pod("edge-1"), "edge-2": _pod("edge-2", x_shift=0.4, evaluations=3)}
    assert reports["edge-2"].drifted
    assert not reports["edge-1"].drifted
    out = apply_drift(status, reports, SPEC, T0)
    assert out.drift is not None
    assert (out.drift.drifted, out.drift.nodes, out.drift.worst_feature) == (True, ["edge-2"], "x")
    assert out.drift.psi is not None
    assert out.drift.psi >= SPEC.feature_psi
    assert out.drift.p_value is not None
    assert out.drift.p_value < 1e-6
    drifted = get_condition(out.conditions, "Drifted")
    assert drifted is not None
    assert (drifted.status, drifted.reason, drifted.observed_generation) == ("True", "DriftDetected", 3)
    message = drifted.message
    assert message.startswith(f"drift on edge-2: x PSI {out.drift.psi:.3f} (>= 0.05), p ")
    assert "(< 0.0033: pValue 0.01 over 3 tests)" in message
    assert message.endswith("; reported after 3 flagged evaluations in a row (raiseAfter)")

    calm = apply_drift(out, {"edge-1": _pod("edge-1")}, SPEC, T0 + timedelta(hours=1))
    condition = get_condition(calm.conditions, "Drifted")
    assert condition is not None
    assert (condition.status, condition.reason) == ("False", "NoDrift")
    assert condition.message.startswith("no drift on 1 node(s); closest: edge-1: ")


def test_a_changed_class_mix_is_named_class_shares() -> None:
    report = _pod("edge-3", share_a=0.95, evaluations=3)
    out = apply_drift(VibrationModelStatus(), {"edge-3": report}, SPEC, T0)
    assert out.drift is not None
    assert out.drift.worst_feature == "classes"
    drifted = get_condition(out.conditions, "Drifted")
    assert drifted is not None
    assert drifted.message.startswith("drift on edge-3: class shares PSI ")
    assert "(>= 0.1)" in drifted.message


def test_the_pods_verdict_decides_not_the_operators_reading_of_a_figure() -> None:
    # One flagged evaluation: a large PSI, significant, but not yet drift by the pod's hysteresis.
    once = _pod("edge-1", x_shift=0.4, evaluations=1)
    assert once.drift["flagged.x"] == 1.0
    assert not once.drifted
    out = apply_drift(VibrationModelStatus(), {"edge-1": once}, SPEC, T0)
    assert out.drift is not None
    assert (out.drift.drifted, out.drift.worst_feature) == (False, "x")
    assert get_condition(out.conditions, "Drifted").status == "False"  # type: ignore[union-attr]


def test_no_drift_says_where_the_class_baseline_is_still_filling() -> None:
    report = _pod("edge-1", baseline=1000)
    out = apply_drift(VibrationModelStatus(), {"edge-1": report}, SPEC, T0)
    message = get_condition(out.conditions, "Drifted").message  # type: ignore[union-attr]
    assert message.endswith("class shares not tested yet on edge-1 (400/1000 windows)")


def test_figures_from_a_pod_without_p_values_still_name_the_largest_psi() -> None:
    old = ModelStatus(
        node="edge-2",
        state="serving",
        ready=True,
        windows_total=500,
        errors_total=0,
        drift={"samples": 500.0, "psi.rms": 0.61, "psi.kurtosis": 0.05, "class_psi": 0.01},
        drifted=True,
        updated_ns=1,
    )
    out = apply_drift(VibrationModelStatus(), {"edge-2": old}, SPEC, T0)
    assert out.drift is not None
    assert (out.drift.worst_feature, out.drift.psi, out.drift.max_psi) == ("rms", 0.61, 0.61)
    message = get_condition(out.conditions, "Drifted").message  # type: ignore[union-attr]
    assert message.startswith("drift on edge-2: rms PSI 0.610 (>= 0.05)")


def test_no_reports_and_a_disabled_check() -> None:
    status = VibrationModelStatus()
    unknown = apply_drift(status, {}, SPEC, T0)
    assert get_condition(unknown.conditions, "Drifted").reason == "NoReports"  # type: ignore[union-attr]
    off = apply_drift(unknown, {}, DriftSpec(enabled=False), T0)
    assert (off.drift, get_condition(off.conditions, "Drifted").reason) == (None, "DriftCheckDisabled")  # type: ignore[union-attr]


def test_a_pod_that_does_not_answer_one_check_keeps_its_drift_verdict() -> None:
    # One slow /status must not clear a drift the pod still reports (False, NoDrift, an event)
    # and raise it again at the next check (a new DriftDetected event): the pod's own hysteresis.
    status = VibrationModelStatus(observed_generation=3)
    drifting = {"edge-1": _pod("edge-1"), "edge-2": _pod("edge-2", x_shift=0.4, evaluations=3)}
    out = apply_drift(status, drifting, SPEC, T0)
    missed = apply_drift(
        out, {"edge-1": _pod("edge-1")}, SPEC, T0 + timedelta(minutes=1), unanswered={"edge-2"}
    )
    assert missed.drift is not None
    assert out.drift is not None
    assert missed.drift.nodes == ["edge-2"]
    # The silent node's figures from the last check, not the calm edge-1's.
    assert (missed.drift.worst_feature, missed.drift.psi) == (out.drift.worst_feature, out.drift.psi)
    assert missed.drift.max_psi is not None
    assert missed.drift.psi is not None
    assert missed.drift.max_psi >= missed.drift.psi, "maxPsi is the largest PSI the status names"
    condition = get_condition(missed.conditions, "Drifted")
    assert condition is not None
    assert (condition.status, condition.reason) == ("True", "DriftDetected")
    # No pod answered at all: nothing learned, nothing changes.
    assert apply_drift(out, {}, SPEC, T0 + timedelta(minutes=2), unanswered={"edge-1", "edge-2"}) == out
    # A node whose pod is gone (not merely silent) leaves the figures, as before.
    gone = apply_drift(out, {"edge-1": _pod("edge-1")}, SPEC, T0 + timedelta(minutes=3))
    assert gone.drift is not None
    assert gone.drift.nodes == []


def test_only_a_ready_pods_silence_keeps_its_nodes_verdict() -> None:
    # A pod that is not Ready (crash-looping, or a replacement starting) has no verdict to keep.
    def pod(*, ready: bool) -> dict[str, Any]:
        return {"status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}

    pods = {"edge-1": pod(ready=True), "edge-2": pod(ready=True), "edge-3": pod(ready=False)}
    assert silent_ready(pods, ["edge-1", "edge-2", "edge-3"], ["edge-1"]) == {"edge-2"}


def test_a_check_that_moves_only_its_time_is_written_every_ten_minutes() -> None:
    status = VibrationModelStatus(observed_generation=3)
    pods = {"edge-1": _pod("edge-1")}
    first = apply_drift(status, pods, SPEC, T0)
    soon = T0 + timedelta(minutes=1)
    assert only_checked_at_moved(first, apply_drift(first, pods, SPEC, soon), soon)
    later = T0 + CHECKED_AT_REFRESH
    assert not only_checked_at_moved(first, apply_drift(first, pods, SPEC, later), later)
    drifting = {"edge-1": _pod("edge-1", x_shift=0.4, evaluations=3)}
    assert not only_checked_at_moved(first, apply_drift(first, drifting, SPEC, soon), soon)
    assert not only_checked_at_moved(status, first, T0), "the first check is written"
