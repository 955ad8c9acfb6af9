"""The MQTT topic layout of vibration-edge: one tree per hall, one branch per machine.

Every hall has a prefix, for example ``factory/hall-a``: any MQTT topic with
no wildcard (``+``, ``#``), no empty level, no leading or trailing ``/`` and
not starting with ``$`` (the broker's own topics). Under it::

    topic                                     who publishes  payload (vibration_core.raw, .messages)
    {prefix}/machines/{machine}/raw           sensors        raw window, binary or JSON
    {prefix}/machines/{machine}/predictions   serving pods   Prediction
    {prefix}/machines/{machine}/alerts        serving pods   Alert
    {prefix}/machines/{machine}/errors        serving pods   ErrorMessage, one per unusable
                                                             input from that machine's raw topic
    {prefix}/errors                           serving pods   ErrorMessage for a message whose
                                                             topic is not in this layout
    {prefix}/nodes/{node}/status              serving pods   ModelStatus, retained

Serving pods subscribe to ``{prefix}/machines/+/raw``; the serving pods of
one VibrationModel share that subscription (MQTT 5 ``$share/{group}/...``), so
the broker hands each window to one of them and a hall answers it once. A
shared subscription still delivers on the window's own topic. The layout
keeps what each client may do expressible as broker ACLs: sensors write
``{prefix}/machines/+/raw`` only, serving pods read that and write the rest,
dashboards read ``{prefix}/#``.

A machine or node id, and a share group, is one topic level of 1 to 128
characters from ``[A-Za-z0-9._-]``, so it can never hold a ``/`` or a wildcard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vibration_core.errors import MessageError
from vibration_core.messages import ID_PATTERN, MAX_ID_LENGTH, ErrorReason

_ID = re.compile(ID_PATTERN)
_RAW_SUFFIX = "/raw"
_SHARE = "$share"
_ID_RULE = f"must be 1 to {MAX_ID_LENGTH} characters from A-Z, a-z, 0-9, '.', '_' and '-'"
# Ids and topics land in error details; a long one is cut so the detail stays short.
_SHOWN = 80


def _shown(value: str) -> str:
    return repr(value if len(value) <= _SHOWN else value[:_SHOWN] + "...")


def _is_id(value: str) -> bool:
    return len(value) <= MAX_ID_LENGTH and _ID.fullmatch(value) is not None


def check_id(kind: str, value: str) -> str:
    """Return `value` if it is a valid machine or node id, else raise `MessageError`.

    `kind` (``machine`` or ``node``) becomes the error's field.
    """
    if not _is_id(value):
        raise MessageError(ErrorReason.BAD_FIELD, kind, f"{kind} id {_shown(value)} {_ID_RULE}")
    return value


def check_share_group(group: str) -> str:
    """Return `group` if it can name the serving pods' shared subscription, else raise `MessageError`.

    MQTT forbids only ``/``, ``+`` and ``#`` in a share name; the id rule is
    narrower, so a group is also safe in a log line, a label and an ACL.
    """
    if not _is_id(group):
        raise MessageError(ErrorReason.BAD_FIELD, "share_group", f"share group {_shown(group)} {_ID_RULE}")
    return group


def check_prefix(prefix: str) -> str:
    """Return `prefix` if it can be a hall's topic prefix, else raise `MessageError` saying why."""
    problem = None
    if not prefix:
        problem = "must not be empty"
    elif prefix.startswith("/") or prefix.endswith("/"):
        problem = "must not start or end with '/'"
    elif "//" in prefix:
        problem = "must not contain an empty level ('//')"
    elif "+" in prefix or "#" in prefix:
        problem = "must not contain the wildcards '+' or '#'"
    elif prefix.startswith("$"):
        problem = "must not start with '$', which marks the broker's own topics"
    elif "\x00" in prefix:
        problem = "must not contain a NUL character"
    if problem is not None:
        detail = f"topic prefix {_shown(prefix)} {problem}"
        raise MessageError(ErrorReason.BAD_FIELD, "prefix", detail)
    return prefix


@dataclass(frozen=True, slots=True)
class TopicLayout:
    """The topics of one hall, under `prefix`; see the module docstring."""

    prefix: str

    def __post_init__(self) -> None:
        """Refuse a prefix that is not a plain, wildcard-free topic."""
        check_prefix(self.prefix)

    def _machine(self, machine: str, leaf: str) -> str:
        return f"{self.prefix}/machines/{check_id('machine', machine)}/{leaf}"

    def raw(self, machine: str) -> str:
        """Topic a machine's sensor publishes raw windows to."""
        return self._machine(machine, "raw")

    def predictions(self, machine: str) -> str:
        """Topic of a machine's predictions."""
        return self._machine(machine, "predictions")

    def alerts(self, machine: str) -> str:
        """Topic of a machine's alerts."""
        return self._machine(machine, "alerts")

    def errors(self, machine: str) -> str:
        """Topic of the errors for unusable inputs from a machine's raw topic."""
        return self._machine(machine, "errors")

    def hall_errors(self) -> str:
        """Topic of the errors for messages whose topic is not in this layout."""
        return f"{self.prefix}/errors"

    def status(self, node: str) -> str:
        """Topic of a node's retained model status."""
        return f"{self.prefix}/nodes/{check_id('node', node)}/status"

    def raw_subscription(self, share_group: str | None = None) -> str:
        """Subscription filter matching the raw topic of every machine of the hall.

        With `share_group`, the MQTT 5 shared subscription ``$share/{group}/...``:
        every subscriber of one group gets its share of the windows, none gets all.
        Raises `MessageError` (``bad_field``, field ``share_group``) for a group that
        is not an id.
        """
        plain = f"{self.prefix}/machines/+/raw"
        if share_group is None:
            return plain
        return f"{_SHARE}/{check_share_group(share_group)}/{plain}"

    def machine_of_raw(self, topic: str) -> str:
        """Return the machine id of a raw topic of this layout.

        Raises `MessageError` (``unknown_topic``, field ``topic``) for any other
        topic, including a raw topic whose machine level is not a valid id.
        """
        head = f"{self.prefix}/machines/"
        if topic.startswith(head) and topic.endswith(_RAW_SUFFIX):
            machine = topic[len(head) : -len(_RAW_SUFFIX)]
            if _is_id(machine):
                return machine
        detail = f"{_shown(topic)} is not {head}<machine>{_RAW_SUFFIX}"
        raise MessageError(ErrorReason.UNKNOWN_TOPIC, "topic", detail)
