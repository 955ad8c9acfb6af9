"""The Node-RED example: a valid flow export whose topics and fields are the message contract's.

examples/node-red/flow.json follows hall A of the Argo CD example (examples/gitops/halls/hall-a):
the same broker and topic prefix as its VibrationModel. The flow is checked against the code
of the contract, not against literals: its subscriptions against `TopicLayout`, the fields
its function nodes and switches read against the pydantic models, and what its function
nodes make of real encoded messages, run in Node.js as Node-RED would run them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
import yaml
from paho.mqtt.client import topic_matches_sub
from pydantic import TypeAdapter, ValidationError

from vibration_core.messages import Alert, JsonMessage, Prediction
from vibration_core.spec import VibrationModel
from vibration_core.topics import TopicLayout

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ROOT = Path(__file__).resolve().parents[2]
FLOW_FILE = ROOT / "examples" / "node-red" / "flow.json"
HALL_MODEL = ROOT / "examples" / "gitops" / "halls" / "hall-a" / "models" / "spindle-classifier.yaml"

Node = dict[str, Any]

# The node types the flow may use: Node-RED's core nodes and the dashboard's, nothing to install
# but @flowfuse/node-red-dashboard.
CORE_TYPES = frozenset({"tab", "comment", "mqtt-broker", "mqtt in", "function", "switch", "file", "debug"})
DASHBOARD_TYPES = frozenset(
    {"ui-base", "ui-theme", "ui-page", "ui-group", "ui-gauge", "ui-chart", "ui-text", "ui-notification"}
)
CONFIG_TYPES = frozenset({"mqtt-broker", "ui-base", "ui-theme", "ui-page", "ui-group"})
# The properties of a node type that name a config node, and the config node's type.
CONFIG_REFERENCES = {
    "mqtt in": {"broker": "mqtt-broker"},
    "ui-page": {"ui": "ui-base", "theme": "ui-theme"},
    "ui-group": {"page": "ui-page"},
    "ui-gauge": {"group": "ui-group"},
    "ui-chart": {"group": "ui-group"},
    "ui-text": {"group": "ui-group"},
    "ui-notification": {"ui": "ui-base"},
}
# Nodes that pass a message on unchanged, so what follows them still reads the contract message.
PASS_THROUGH = frozenset({"switch"})

FLOW: list[Node] = json.loads(FLOW_FILE.read_text())
BY_ID: dict[str, Node] = {node["id"]: node for node in FLOW}
MQTT = VibrationModel.model_validate(yaml.safe_load(HALL_MODEL.read_text())).spec.mqtt
HALL = TopicLayout(MQTT.topic_prefix)

TS = 1_767_225_600_123_456_789
TS_MS = TS // 1_000_000  # the flow writes ms: a JavaScript number cannot hold the ns exactly


@dataclass(frozen=True)
class Kind:
    """A message kind of the contract: its model and the topic of one machine's messages."""

    model: type[JsonMessage]
    topic: Callable[[str], str]


# Every `mqtt in` node of the flow, by id, and the kind of message it subscribes to.
KINDS = {
    "vibration-predictions-in": Kind(Prediction, HALL.predictions),
    "vibration-alerts-in": Kind(Alert, HALL.alerts),
}


def _of_type(*types: str) -> list[Node]:
    return [node for node in FLOW if node["type"] in types]


def _targets(node: Node) -> Iterator[Node]:
    for output in node.get("wires", []):
        for target in output:
            yield BY_ID[target]


def _fed_by(source_id: str) -> list[Node]:
    """The nodes that receive the message of `source_id` as it arrived, through pass-through nodes."""
    fed: dict[str, Node] = {}
    todo = [BY_ID[source_id]]
    while todo:
        for target in _targets(todo.pop()):
            if target["id"] not in fed:
                fed[target["id"]] = target
                if target["type"] in PASS_THROUGH:
                    todo.append(target)
    return list(fed.values())


def _reachable(source_id: str) -> set[str]:
    """The types of every node a message of `source_id` can reach."""
    seen: set[str] = set()
    todo = [BY_ID[source_id]]
    while todo:
        for target in _targets(todo.pop()):
            if target["id"] not in seen:
                seen.add(target["id"])
                todo.append(target)
    return {BY_ID[node_id]["type"] for node_id in seen}


def _kind_of(node: Node) -> Kind:
    (kind,) = [kind for source, kind in KINDS.items() if node in _fed_by(source)]
    return kind


def _machine_wildcard(topic_of: Callable[[str], str]) -> str:
    """The filter matching `topic_of(machine)` for every machine: the machine's level made ``+``."""
    one, other = topic_of("m1").split("/"), topic_of("m2").split("/")
    return "/".join(a if a == b else "+" for a, b in zip(one, other, strict=True))


def test_flow_is_a_node_red_export() -> None:
    ids = [node["id"] for node in FLOW]
    assert len(ids) == len(set(ids)), "node ids must be unique"
    (tab,) = _of_type("tab")
    referenced: set[str] = set()
    for node in FLOW:
        if node["type"] in CONFIG_TYPES:
            assert "z" not in node, f"config node {node['id']} should be global, not on a tab"
            assert "wires" not in node
        elif node["type"] != "tab":
            assert node.get("z") == tab["id"], f"{node['id']} is not on the flow's tab"
            assert isinstance(node["wires"], list)
            assert isinstance(node["x"], int)
            assert isinstance(node["y"], int)
        if "outputs" in node and node["type"] in {"function", "switch"}:
            assert len(node["wires"]) == node["outputs"], f"{node['id']}: one wire list per output"
        for target in _targets(node):
            assert target.get("z") == node.get("z"), f"{node['id']} wires to a node on another tab"
        for prop, config_type in CONFIG_REFERENCES.get(node["type"], {}).items():
            assert BY_ID[node[prop]]["type"] == config_type, f"{node['id']}.{prop}"
            referenced.add(node[prop])
    unused = {node["id"] for node in _of_type(*CONFIG_TYPES)} - referenced
    assert not unused, f"config nodes nobody uses: {unused}"


def test_flow_needs_only_core_and_dashboard_nodes() -> None:
    assert {node["type"] for node in FLOW} <= CORE_TYPES | DASHBOARD_TYPES


def test_targets_of_wires_exist() -> None:
    for node in FLOW:
        for output in node.get("wires", []):
            assert set(output) <= BY_ID.keys(), f"{node['id']} wires to a missing node"


def test_flow_carries_no_credentials() -> None:
    for node in FLOW:
        assert "credentials" not in node
    (broker,) = _of_type("mqtt-broker")
    assert not {"user", "password", "username"} & broker.keys()


def test_broker_is_the_halls_broker() -> None:
    (broker,) = _of_type("mqtt-broker")
    url = urlsplit(MQTT.broker)
    assert (broker["broker"], int(broker["port"])) == (url.hostname, url.port)
    assert broker["usetls"] == (url.scheme == "mqtts")


def test_subscriptions_are_the_topic_layouts() -> None:
    subscriptions = _of_type("mqtt in")
    assert {node["id"] for node in subscriptions} == KINDS.keys()
    (broker,) = _of_type("mqtt-broker")
    for node in subscriptions:
        kind = KINDS[node["id"]]
        assert node["topic"] == _machine_wildcard(kind.topic)
        assert node["datatype"] == "json", "function nodes read msg.payload as an object"
        assert node["broker"] == broker["id"]


@pytest.mark.parametrize("source", sorted(KINDS))
def test_subscription_matches_its_kind_only(source: str) -> None:
    topic = BY_ID[source]["topic"]
    kind = KINDS[source]
    for machine in ("m1", "cnc-01", "A.b_c-9"):
        assert topic_matches_sub(topic, kind.topic(machine))
    others = [HALL.raw("m1"), HALL.errors("m1"), HALL.hall_errors(), HALL.status("edge-1")]
    others += [other.topic("m1") for other in KINDS.values() if other is not kind]
    others.append(TopicLayout(f"{HALL.prefix}-other").predictions("m1"))
    for other in others:
        assert not topic_matches_sub(topic, other), other


@pytest.mark.parametrize(
    ("source", "sinks"),
    [
        pytest.param(
            "vibration-predictions-in", {"ui-gauge", "ui-chart", "ui-text", "file"}, id="predictions"
        ),
        pytest.param("vibration-alerts-in", {"ui-notification", "switch", "debug", "file"}, id="alerts"),
    ],
)
def test_messages_reach_dashboard_alert_and_log(source: str, sinks: set[str]) -> None:
    assert sinks <= _reachable(source)


FUNCTIONS = _of_type("function")
_READ = re.compile(r"\bmsg\.payload\.([A-Za-z_$][\w$]*)")
_PAYLOAD = re.compile(r"\bmsg\.payload\b")
_ASSIGNED = re.compile(r"\s*=(?!=)")
_COMMENT_LINE = re.compile(r"^\s*//.*$", re.MULTILINE)


def _payload_reads(source: str) -> set[str]:
    """The fields `source` reads as ``msg.payload.<field>``; any other use is an assignment."""
    source = _COMMENT_LINE.sub("", source)
    for use in _PAYLOAD.finditer(source):
        rest = source[use.end() :]
        assert rest.startswith(".") or _ASSIGNED.match(rest), (
            f"msg.payload used other than as msg.payload.<field> or assigned: ...{source[use.start() :][:60]}"
        )
    assert not re.search(r"\bmsg\s*\[", source), "msg['...'] hides what is read from the contract test"
    return set(_READ.findall(source))


@pytest.mark.parametrize("function", FUNCTIONS, ids=lambda node: node["id"])
def test_functions_read_only_fields_of_their_message(function: Node) -> None:
    model = _kind_of(function).model
    reads = _payload_reads(function["func"])
    assert reads, "a function fed with a contract message reads some of its fields"
    assert reads <= model.model_fields.keys(), (
        f"not fields of {model.__name__}: {reads - model.model_fields.keys()}"
    )


@pytest.mark.parametrize("switch", _of_type("switch"), ids=lambda node: node["id"])
def test_switches_compare_fields_with_values_they_can_hold(switch: Node) -> None:
    model = _kind_of(switch).model
    assert switch["propertyType"] == "msg"
    head, _, field = switch["property"].partition(".")
    assert head == "payload"
    assert field in model.model_fields
    annotation = model.model_fields[field].annotation
    assert annotation is not None
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    for rule in switch["rules"]:
        assert (rule["t"], rule["vt"]) == ("eq", "str")
        try:
            adapter.validate_python(rule["v"])
        except ValidationError:
            pytest.fail(f"{model.__name__}.{field} is never {rule['v']!r}")


# The model and window every message below comes from.
SERVED: dict[str, Any] = {"timestamp_ns": TS, "model_id": "spindle-classifier", "model_version": "v3"}
PREDICTION = Prediction(
    **SERVED,
    machine="m1",
    label="bearing_fault",
    confidence=0.93,
    probabilities={"normal": 0.05, "bearing_fault": 0.93, "imbalance": 0.02},
    latency_ms=4.2,
)
# Labels come from the model card; line protocol escapes what it must in tags and field keys.
ODD_LABELS = Prediction(
    **SERVED,
    machine="m1",
    label="outer race",
    confidence=0.6,
    probabilities={"outer race": 0.6, "a=b,c": 0.4},
    latency_ms=4.2,
)
CRITICAL = Alert(
    **SERVED, machine="m2", label="bearing_fault", confidence=0.97, consecutive=5, severity="critical"
)
WARNING = Alert(**SERVED, machine="m3", label="imbalance", confidence=0.81, consecutive=3, severity="warning")


def _received(message: Prediction | Alert) -> Node:
    """The msg an `mqtt in` node with datatype json emits for `message`, as the serving pods publish it."""
    (topic_of,) = [kind.topic for kind in KINDS.values() if kind.model is type(message)]
    topic = topic_of(message.machine)
    return {"topic": topic, "payload": json.loads(message.encode()), "qos": 1, "retain": False}


def _switch_passes(switch: Node, msg: Node) -> bool:
    value: Any = msg
    for part in switch["property"].split("."):
        value = value[part]
    return any(value == rule["v"] for rule in switch["rules"])


@pytest.mark.parametrize(
    ("message", "sent_to"),
    [
        pytest.param(CRITICAL, ["vibration-alert-email"], id="critical"),
        pytest.param(WARNING, [], id="warning"),
    ],
)
def test_only_critical_alerts_are_emailed(message: Alert, sent_to: list[str]) -> None:
    (switch,) = _of_type("switch")
    passed = _switch_passes(switch, _received(message))
    assert [target["id"] for target in _targets(switch) if passed] == sent_to


@dataclass(frozen=True)
class Run:
    """What function node `function_id` sends for `message`: one msg with `topic` and `payload`."""

    id: str
    function_id: str
    message: Prediction | Alert
    topic: str
    payload: object


def _tags(machine: str) -> str:
    return f"prefix={HALL.prefix},machine={machine},model_id=spindle-classifier,model_version=v3"


RUNS = [
    Run("latency-gauge", "vibration-latency", PREDICTION, "m1", 4.2),
    Run("confidence-chart", "vibration-confidence", PREDICTION, "m1 bearing_fault", {"x": TS_MS, "y": 0.93}),
    Run(
        "last-prediction-text",
        "vibration-last-prediction",
        PREDICTION,
        "m1",
        "m1: bearing_fault 93% (spindle-classifier v3, 4.2 ms)",
    ),
    Run(
        "prediction-line",
        "vibration-prediction-line",
        PREDICTION,
        HALL.predictions("m1"),
        f"vibration_prediction,{_tags('m1')},label=bearing_fault "
        f"confidence=0.93,latency_ms=4.2,p_bearing_fault=0.93,p_imbalance=0.02,p_normal=0.05 {TS_MS}",
    ),
    Run(
        "prediction-line-escaped",
        "vibration-prediction-line",
        ODD_LABELS,
        HALL.predictions("m1"),
        rf"vibration_prediction,{_tags('m1')},label=outer\ race "
        rf"confidence=0.6,latency_ms=4.2,p_a\=b\,c=0.4,p_outer\ race=0.6 {TS_MS}",
    ),
    Run(
        "alert-line",
        "vibration-alert-line",
        CRITICAL,
        HALL.alerts("m2"),
        f"vibration_alert,{_tags('m2')},label=bearing_fault,severity=critical "
        f"confidence=0.97,consecutive=5i {TS_MS}",
    ),
    Run(
        "alert-notification",
        "vibration-alert-toast",
        WARNING,
        "m3",
        "WARNING m3: imbalance (81%, 3 windows in a row)",
    ),
    Run(
        "alert-email",
        "vibration-alert-email",
        CRITICAL,
        "[vibration-edge] critical alert: m2 bearing_fault",
        "\n".join(
            [
                "Machine:    m2",
                "Fault:      bearing_fault",
                "Severity:   critical",
                "Confidence: 97%",
                "Windows:    5 in a row above the alert threshold",
                "Model:      spindle-classifier v3",
                "Window at:  2026-01-01T00:00:00.123Z",
                f"Topic:      {HALL.alerts('m2')}",
            ]
        ),
    ),
]

# Runs function node bodies as Node-RED does: `msg` and `node` in scope, the return value sent
# (one msg, or one entry per output, each a msg, an array of msgs or null). One process for
# every run: starting Node.js costs more than the runs.
HARNESS = """
const runs = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const results = runs.map(({func, msg}) => {
    const calls = [];
    const node = {};
    for (const name of ['log', 'warn', 'error', 'status', 'send', 'done']) {
        node[name] = (...args) => calls.push([name, ...args.map(String)]);
    }
    try {
        let sent = new Function('msg', 'node', func)(msg, node);
        if (sent === undefined || sent === null) sent = [];
        if (!Array.isArray(sent)) sent = [sent];
        const outputs = sent.map((out) => (out === undefined || out === null ? [] : [].concat(out)));
        return {outputs, calls};
    } catch (err) {
        return {error: err.stack, calls};
    }
});
process.stdout.write(JSON.stringify(results));
"""


@pytest.fixture(scope="module")
def sent() -> dict[str, Node]:
    """What each run's function sent, run in Node.js: ``outputs`` and ``calls``, or an ``error``."""
    node_js = shutil.which("node") or shutil.which("nodejs")
    if node_js is None:
        pytest.skip("Node.js is not installed (apt-get install nodejs): the function nodes cannot run")
    request = [{"func": BY_ID[run.function_id]["func"], "msg": _received(run.message)} for run in RUNS]
    done = subprocess.run(
        [node_js, "-e", HARNESS],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if done.returncode != 0:
        pytest.fail(f"the harness failed in Node.js:\n{done.stderr}")
    return dict(zip((run.id for run in RUNS), json.loads(done.stdout), strict=True))


def test_every_function_node_has_a_run() -> None:
    assert {run.function_id for run in RUNS} == {node["id"] for node in FUNCTIONS}


@pytest.mark.parametrize("run", RUNS, ids=lambda run: run.id)
def test_function_output_for_a_real_message(sent: dict[str, Node], run: Run) -> None:
    function = BY_ID[run.function_id]
    assert _kind_of(function).model is type(run.message)
    result = sent[run.id]
    assert "error" not in result, f"{run.function_id} threw in Node.js:\n{result['error']}"
    assert result["calls"] == [], f"{run.function_id} called node.*: {result['calls']}"
    assert len(result["outputs"]) == function["outputs"]
    (msg,) = result["outputs"][0]
    assert msg["topic"] == run.topic
    assert msg["payload"] == run.payload
