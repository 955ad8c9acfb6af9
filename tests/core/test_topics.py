"""Tests of the MQTT topic layout: built topics, prefixes, ids, share groups and raw-topic parsing."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from vibration_core.errors import MessageError
from vibration_core.messages import ErrorReason
from vibration_core.spec import MqttSpec
from vibration_core.topics import TopicLayout, check_id, check_share_group

LAYOUT = TopicLayout("factory/hall-a")
NOT_IDS = [
    pytest.param("", id="empty"),
    pytest.param("x" * 129, id="too-long"),
    pytest.param("cnc/01", id="slash"),
    pytest.param("+", id="plus"),
    pytest.param("#", id="hash"),
    pytest.param("cnc 01", id="space"),
    pytest.param("cnc-01\n", id="trailing-newline"),
    pytest.param("mäschine", id="non-ascii"),
    pytest.param("$share", id="dollar"),
]
"""Neither a machine or node id nor a share group: each is one topic level of [A-Za-z0-9._-]{1,128}."""


def test_builds_the_documented_topics() -> None:
    assert LAYOUT.raw("cnc-01") == "factory/hall-a/machines/cnc-01/raw"
    assert LAYOUT.predictions("cnc-01") == "factory/hall-a/machines/cnc-01/predictions"
    assert LAYOUT.alerts("cnc-01") == "factory/hall-a/machines/cnc-01/alerts"
    assert LAYOUT.errors("cnc-01") == "factory/hall-a/machines/cnc-01/errors"
    assert LAYOUT.hall_errors() == "factory/hall-a/errors"
    assert LAYOUT.status("edge-gw.1") == "factory/hall-a/nodes/edge-gw.1/status"
    assert LAYOUT.raw_subscription() == "factory/hall-a/machines/+/raw"


@pytest.mark.parametrize("group", ["spindle-classifier", "A.b_c-9", "g" * 128, "0"])
def test_a_share_group_makes_the_raw_subscription_an_mqtt5_shared_one(group: str) -> None:
    assert LAYOUT.raw_subscription(group) == f"$share/{group}/factory/hall-a/machines/+/raw"
    assert LAYOUT.raw_subscription(None) == LAYOUT.raw_subscription()
    assert check_share_group(group) == group


def test_a_window_of_a_shared_subscription_still_names_its_machine() -> None:
    # The broker delivers on the topic the sensor published to, never on the filter, so the
    # machine is read as with a plain subscription (tests/infer/test_serve.py shows it live).
    shared = LAYOUT.raw_subscription("spindle-classifier")
    assert LAYOUT.machine_of_raw("factory/hall-a/machines/m7/raw") == "m7"
    with pytest.raises(MessageError):
        LAYOUT.machine_of_raw(shared)


@pytest.mark.parametrize("group", NOT_IDS)
def test_refuses_a_share_group_that_is_no_topic_level_id(group: str) -> None:
    for build in (LAYOUT.raw_subscription, check_share_group):
        with pytest.raises(MessageError) as caught:
            build(group)
        assert caught.value.reason == ErrorReason.BAD_FIELD
        assert caught.value.field == "share_group"
        assert caught.value.detail.startswith("share group ")
        assert "1 to 128 characters" in caught.value.detail


def test_single_level_prefix() -> None:
    assert TopicLayout("hall").raw("m") == "hall/machines/m/raw"


@pytest.mark.parametrize(
    "machine",
    [
        pytest.param("cnc-01", id="plain"),
        pytest.param("A.b_c-9", id="every-class"),
        pytest.param("x" * 128, id="longest"),
        pytest.param("0", id="shortest"),
    ],
)
def test_machine_of_raw_inverts_raw(machine: str) -> None:
    assert LAYOUT.machine_of_raw(LAYOUT.raw(machine)) == machine


@pytest.mark.parametrize(
    "prefix",
    [
        pytest.param("", id="empty"),
        pytest.param("/factory/hall-a", id="leading-slash"),
        pytest.param("factory/hall-a/", id="trailing-slash"),
        pytest.param("/", id="only-slash"),
        pytest.param("factory//hall-a", id="empty-level"),
        pytest.param("factory/+/hall", id="plus"),
        pytest.param("factory/#", id="hash"),
        pytest.param("factory/hall+a", id="plus-inside-level"),
        pytest.param("$SYS/hall", id="dollar"),
        pytest.param("factory/\x00", id="nul"),
    ],
)
def test_refuses_bad_prefixes(prefix: str) -> None:
    with pytest.raises(MessageError) as caught:
        TopicLayout(prefix)
    assert caught.value.reason == ErrorReason.BAD_FIELD
    assert caught.value.field == "prefix"


@pytest.mark.parametrize("bad_id", NOT_IDS)
def test_refuses_bad_ids(bad_id: str) -> None:
    for kind, build in [
        ("machine", LAYOUT.raw),
        ("machine", LAYOUT.predictions),
        ("machine", LAYOUT.alerts),
        ("machine", LAYOUT.errors),
        ("node", LAYOUT.status),
    ]:
        with pytest.raises(MessageError) as caught:
            build(bad_id)
        assert caught.value.reason == ErrorReason.BAD_FIELD
        assert caught.value.field == kind
        assert f"{kind} id" in caught.value.detail


def test_check_id_returns_a_valid_id() -> None:
    assert check_id("node", "k3s-node-1") == "k3s-node-1"


def test_long_ids_are_cut_in_the_detail() -> None:
    with pytest.raises(MessageError) as caught:
        check_id("machine", "/" * 10_000)
    assert len(caught.value.detail) < 300


@pytest.mark.parametrize(
    "topic",
    [
        pytest.param("factory/hall-b/machines/cnc-01/raw", id="other-hall"),
        pytest.param("factory/hall-a/machines/cnc-01/predictions", id="not-raw"),
        pytest.param("factory/hall-a/machines/cnc-01/raw/extra", id="too-deep"),
        pytest.param("factory/hall-a/machines/a/b/raw", id="two-levels"),
        pytest.param("factory/hall-a/machines//raw", id="empty-machine"),
        pytest.param("factory/hall-a/machines/raw", id="no-machine"),
        pytest.param("factory/hall-a/machines/+/raw", id="wildcard"),
        pytest.param("factory/hall-a/machines/cnc 01/raw", id="bad-id"),
        pytest.param("factory/hall-a/machines/" + "x" * 129 + "/raw", id="long-id"),
        pytest.param("factory/hall-a/nodes/n1/status", id="status"),
        pytest.param("factory/hall-a/errors", id="hall-errors"),
        pytest.param("factory/hall-ab/machines/cnc-01/raw", id="prefix-of-prefix"),
        pytest.param("", id="empty"),
    ],
)
def test_machine_of_raw_refuses_foreign_topics(topic: str) -> None:
    with pytest.raises(MessageError) as caught:
        LAYOUT.machine_of_raw(topic)
    assert caught.value.reason == ErrorReason.UNKNOWN_TOPIC
    assert caught.value.field == "topic"


def test_layout_is_frozen() -> None:
    with pytest.raises(AttributeError):
        LAYOUT.prefix = "elsewhere"  # type: ignore[misc]  # assigning is the point of the test


@pytest.mark.parametrize("prefix", ["factory//hall-a", "factory/hall-a\x00", "$SYS/x", "a/+/b", "/a", "a/"])
def test_a_topic_prefix_serve_refuses_is_refused_by_the_spec_too(prefix: str) -> None:
    # The CRD's pattern let "factory//hall-a" through, and every serving pod then crashed on it.
    with pytest.raises(MessageError):
        TopicLayout(prefix)
    with pytest.raises(ValidationError):
        MqttSpec.model_validate({"broker": "mqtt://h:1883", "topicPrefix": prefix})


@pytest.mark.parametrize("prefix", ["a", "factory/hall-a", "a/b c/d", "hall$1"])
def test_a_topic_prefix_serve_takes_is_taken_by_the_spec(prefix: str) -> None:
    assert TopicLayout(prefix).prefix == prefix
    assert MqttSpec.model_validate({"broker": "mqtt://h:1883", "topicPrefix": prefix}).topic_prefix == prefix
