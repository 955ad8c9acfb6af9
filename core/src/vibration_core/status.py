"""The VibrationModel resource's status (contract 5): what the operator observed, as pydantic models.

The operator alone writes it, through the status subresource; the CRD's
``status`` schema is generated from these models (`vibration_operator.crd`),
each field's docstring its description. The spec it describes is
`vibration_core.spec`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from vibration_core.schema import Schema


class Condition(Schema):
    """A condition shaped like metav1.Condition."""

    type: Literal["Ready", "Validated", "Progressing", "Degraded", "Drifted"]
    """Ready, Validated, Progressing, Degraded or Drifted."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown."""
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    """CamelCase reason for the last transition."""
    message: str = Field(default="", max_length=32768)
    """Human-readable details."""
    observed_generation: int = Field(ge=0)
    """metadata.generation the condition was set for."""
    last_transition_time: datetime
    """When status last changed."""


class VersionRef(Schema):
    """A model version and its digest."""

    version: str
    """Model version."""
    sha256: str | None = None
    """Artifact digest."""


class GateFigures(Schema):
    """What one model scored on a node's test windows."""

    version: str | None = None
    """The model version."""
    accuracy: float | None = None
    """Accuracy."""
    macro_f1: float | None = None
    """Mean F1 over the classes in the test data."""
    class_recall: dict[str, float] = Field(default_factory=dict)
    """Recall per class label present in the test data."""
    p99_latency_ms: float | None = None
    """p99 latency per window, ms."""


class NodeGate(Schema):
    """The promotion gate's decision on this node for the target, with the numbers it used.

    About 0.8 KB for a four-class model (figures of both models, ten checks): 160 KB of
    status for a 200-node hall, well inside an object's 1.5 MiB.
    """

    reason_code: str = Field(max_length=32)
    """Passed, BelowFloor, Regressed, TooSlow, ShadowDisagreed, BadTestData, ... (README: Promotion gate)."""
    candidate: GateFigures | None = None
    """The candidate's figures."""
    champion: GateFigures | None = None
    """The figures of the version the node served, on the same windows; unset: no comparison."""
    checks: list[str] = Field(default_factory=list, max_length=24)
    """Every figure against its bar, e.g. "recall[bearing_fault] 0.712 < 0.850 (regression)"."""
    shadow_windows: int | None = None
    """Live windows the candidate ran beside the served version (spec.rollout.shadow)."""
    agreement: float | None = None
    """Share of those windows where both predicted the same class."""


class NodeStatus(Schema):
    """What one node serves and how its last validation went."""

    name: str
    """Node name."""
    state: Literal["Pending", "Validating", "Serving", "Failed", "Waiting"]
    """Pending, Validating, Serving (the target), Failed (kept its last good version) or Waiting."""
    serving: VersionRef | None = None
    """The version the node serves now."""
    target: VersionRef | None = None
    """The version the node is moving to."""
    reason: str = ""
    """Why the node is in this state, e.g. the validator's one-line reason."""
    accuracy: float | None = None
    """Accuracy of the target on the node's test data."""
    p99_latency_ms: float | None = None
    """p99 latency per window of the target on the node."""
    gate: NodeGate | None = None
    """The promotion gate's decision for the target on this node, with its numbers."""
    updated_at: datetime | None = None
    """When this entry last changed."""


class HistoryEntry(Schema):
    """One promotion or rollback."""

    action: Literal["Promoted", "RolledBack", "ValidationFailed"]
    """Promoted, RolledBack or ValidationFailed."""
    version: str
    """The version concerned."""
    sha256: str | None = None
    """Its digest."""
    node: str | None = None
    """The node concerned, for failures."""
    reason: str = ""
    """Why."""
    at: datetime
    """When."""


class DriftStatus(Schema):
    """Drift seen by the serving pods."""

    drifted: bool = False
    """Whether any node reports drift beyond the policy."""
    worst_feature: str | None = None
    """The feature, or classes (the class shares), behind the verdict: the flagged test of lowest p-value."""
    psi: float | None = None
    """PSI of worstFeature: the effect size."""
    p_value: float | None = None
    """p-value of worstFeature's test on that node."""
    max_psi: float | None = None
    """Largest PSI over features, class shares and nodes: an effect size, not a verdict."""
    nodes: list[str] = Field(default_factory=list)
    """Nodes that report drift."""
    checked_at: datetime | None = None
    """When the pods were last read."""


class ValidationSummary(Schema):
    """Validation figures of the target version over the nodes that ran it."""

    accuracy: float | None = None
    """Lowest accuracy over the nodes that validated the target."""
    nodes_passed: int = 0
    """Nodes where the target passed."""
    nodes_failed: int = 0
    """Nodes where the target failed."""


class VibrationModelStatus(Schema):
    """Observed state, written by the operator only."""

    observed_generation: int | None = None
    """metadata.generation this status describes."""
    phase: Literal["Pending", "Progressing", "Ready", "Degraded", "Waiting", "Paused"] | None = None
    """Pending, Progressing, Ready, Degraded, Waiting (outside the update window) or Paused."""
    target: VersionRef | None = None
    """The version being rolled out (the spec's)."""
    active: VersionRef | None = None
    """The last version promoted on every node: what the hall serves."""
    ready_nodes: str | None = None
    """Nodes serving the target over selected nodes, e.g. 2/3."""
    canaries: list[str] = Field(default_factory=list)
    """The canary nodes of the target's rollout, chosen when it starts (one that leaves early is replaced)."""
    nodes: list[NodeStatus] = Field(default_factory=list)
    """Per-node state."""
    validation: ValidationSummary | None = None
    """Validation figures of the target."""
    drift: DriftStatus | None = None
    """Drift figures."""
    history: list[HistoryEntry] = Field(default_factory=list, max_length=10)
    """The last 10 promotions, rollbacks and failures, newest last."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Validated, Progressing, Degraded, Drifted."""
