"""Deterministic, DNS-safe names and the labels of everything the operator creates.

Names are a pure function of the VibrationModel and the node, so a restarted
operator finds the objects it made before (no state needed to remember
them), and two objects can never share a name: whenever a name had to be
shortened or a character replaced, a short hash of the original parts is
appended. Node names are DNS subdomains (dots, up to 253 characters); pod
names must also work as a hostname, so they are kept to one 63-character
DNS label.
"""

from __future__ import annotations

import hashlib
import re

DOMAIN = "edge.vibration.io"
APP_NAME = "vibration-infer"
MANAGED_BY = "vibration-operator"
COMPONENT = "serving"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MODEL = f"{DOMAIN}/model"
LABEL_NODE = f"{DOMAIN}/node"

ANNOTATION_NODE = f"{DOMAIN}/node-name"
"""The node's full name (the label value may be shortened)."""
ANNOTATION_TARGET = f"{DOMAIN}/target"
"""On a target ConfigMap: the operator's full record of the node's target (JSON)."""
ANNOTATION_ACTIVE = f"{DOMAIN}/active"
"""On a target ConfigMap: the full record of the hall's active version (JSON), for rollbacks."""
ANNOTATION_TARGET_REF = f"{DOMAIN}/target-ref"
"""On a serving pod: ``version@sha256:digest``, what its target ConfigMap was last set to.

Writing it makes the kubelet sync the pod at once, which refreshes the mounted ConfigMap; without
it the new target reaches the pod only at the kubelet's next periodic sync (about a minute,
measured on a real cluster)."""
ANNOTATION_POD_SPEC_HASH = f"{DOMAIN}/pod-spec-hash"
"""On a serving pod: hash of the spec it was built with, to notice pods built from an older spec."""

MAX_LABEL = 63
_HASH_LEN = 8
_PREFIX = "vibm"
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def _short_hash(*parts: str) -> str:
    # "\0" cannot occur in Kubernetes names, so the joined parts are unambiguous.
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:_HASH_LEN]


def _dns_label(*parts: str, suffix: str = "") -> str:
    """``<parts joined by ->[-suffix]`` as one DNS label, hashed when anything was altered."""
    raw = "-".join(parts)
    clean = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")
    tail = f"-{suffix}" if suffix else ""
    if clean == raw and len(clean) + len(tail) <= MAX_LABEL:
        return clean + tail
    tag = f"-{_short_hash(*parts)}{tail}"
    return clean[: MAX_LABEL - len(tag)].rstrip("-") + tag


def serving_pod_name(vm_name: str, node: str) -> str:
    """``vibm-<vm>-<node>``: the serving pod of a VibrationModel on a node."""
    return _dns_label(_PREFIX, vm_name, node)


def target_configmap_name(vm_name: str, node: str) -> str:
    """``vibm-<vm>-<node>-target``: the ConfigMap that says which model the node should serve."""
    return _dns_label(_PREFIX, vm_name, node, suffix="target")


def label_value(value: str) -> str:
    """`value` as a valid label value: unchanged when it is one, else shortened with a hash."""
    if len(value) <= MAX_LABEL and _LABEL_VALUE.match(value):
        return value
    digest = _short_hash(value)
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)[: MAX_LABEL - len(digest) - 1]
    core = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", clean)
    return f"{core}-{digest}" if core else digest


def share_group(vm_name: str) -> str:
    """The MQTT share group of a VibrationModel's serving pods: its name, as in their model label.

    One group per VibrationModel, so a hall answers each window once. A name past 63
    characters is shortened with a hash, well inside the 1 to 128 id characters serve takes.
    """
    return label_value(vm_name)


def selector_labels(vm_name: str) -> dict[str, str]:
    """Labels that select every serving pod of one VibrationModel."""
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_MODEL: label_value(vm_name)}


def serving_labels(vm_name: str, node: str) -> dict[str, str]:
    """Labels of a serving pod and its target ConfigMap."""
    return {
        LABEL_NAME: APP_NAME,
        LABEL_COMPONENT: COMPONENT,
        **selector_labels(vm_name),
        LABEL_NODE: label_value(node),
    }
