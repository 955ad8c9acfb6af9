"""kopf's own records in the operator's log: the object they concern, none of kopf's private extras."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import kopf

from vibration_core.logs import JsonFormatter, KeyValueFormatter
from vibration_operator.logging import kopf_object

if TYPE_CHECKING:
    import pytest


def kopf_record(body: kopf.RawBody, caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    """The record kopf's per-object logger makes for one handler message about `body`."""
    with caplog.at_level(logging.WARNING, logger="kopf.objects"):
        kopf.LocalObjectLogger(body=kopf.Body(body), settings=kopf.OperatorSettings()).warning(
            "Handler 'reconcile' failed temporarily."
        )
    (one,) = caplog.records
    return one


def test_a_kopf_record_names_its_object_and_drops_kopfs_private_extras(
    caplog: pytest.LogCaptureFixture,
) -> None:
    parsed = json.loads(
        JsonFormatter(kopf_object).format(
            kopf_record({"kind": "VibrationModel", "metadata": {"name": "m1", "namespace": "hall-a"}}, caplog)
        )
    )
    assert parsed.pop("ts")
    assert parsed == {
        "level": "warning",
        "logger": "kopf.objects",
        "event": "Handler 'reconcile' failed temporarily.",
        "object": "hall-a/m1",
    }


def test_a_cluster_scoped_object_is_named_without_a_namespace(caplog: pytest.LogCaptureFixture) -> None:
    line = KeyValueFormatter(kopf_object).format(
        kopf_record({"kind": "ClusterThing", "metadata": {"name": "m1"}}, caplog)
    )
    assert line.endswith(" event=\"Handler 'reconcile' failed temporarily.\" object=m1")
