"""A hall's life after its rollouts, on a real cluster: scenarios 9, 8, 7 and 10 of the e2e issue.

Runs after ``test_a_rollouts.py`` on the same hall, in this order:

9. the training Job (``training-job/job.yaml``) runs in the cluster: simulate,
   fit, publish to the in-cluster registry; its manifest rolls out;
8. the hall broker bridged to a central broker (a second Mosquitto in another
   namespace); the central broker stopped while predictions flow, then
   started: every prediction arrives;
7. a gateway reboots while the registry is down: it serves its last good
   version from its cache (needs ``VIBRATION_E2E_NODE_CTL``, a command taking
   ``stop NODE`` / ``start NODE``; skipped without). The registry stand-in
   keeps objects in memory, so this runs after every step that fetches;
10. deleting the VibrationModel removes its pods and ConfigMaps.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import pytest
import yaml

import demo_k8s_objects as objects
from demo_k8s import wait_job
from demo_k8s_cluster import ROOT, SERVING_SECRET
from demo_k8s_hall import MODEL, Hall, health, node_status, run_or_fail
from demo_k8s_models import port_forward
from vibration_testkit import central_broker as central

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="KUBECONFIG is not set: no cluster to test"),
    pytest.mark.timeout(1200),  # a rollout on real nodes, and the hall's set-up for the first test
]


def test_9_the_training_job_publishes_a_model_that_rolls_out(hall: Hall) -> None:
    job = yaml.safe_load((ROOT / "training-job" / "job.yaml").read_text())
    hall_ = hall.cluster.hall
    env = {
        "MODEL_VERSION": "v6", "WINDOWS": "2400", "S3_ENDPOINT": hall_.minio_url,
        "TARGET_NAMESPACE": hall.ns, "NODE_SELECTOR": f"{objects.HALL_LABEL}={hall_.name}",
        "MQTT_BROKER": hall_.broker_url, "TOPIC_PREFIX": hall_.topic_prefix,
        "MQTT_CREDENTIALS_SECRET": SERVING_SECRET,
    }  # fmt: skip
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["image"] = hall_.image("vibration-train")
    container["env"] = [{**e, "value": env[e["name"]]} if e["name"] in env else e for e in container["env"]]
    assert {e["name"] for e in container["env"]} >= set(env), "job.yaml lost one of its settings"
    hall.cluster.apply("training-job", [{**job, "metadata": {**job["metadata"], "namespace": hall.ns}}])
    run_or_fail(lambda: wait_job(hall.cluster, job["metadata"]["name"], timeout_s=900))
    log = hall.kubectl("logs", f"job/{job['metadata']['name']}")
    manifest = yaml.safe_load(log[log.index("apiVersion: edge.vibration.io/") :])
    assert (manifest["kind"], manifest["spec"]["version"]) == ("VibrationModel", "v6")
    path = hall.cluster.out / "spindle-classifier-v6.yaml"
    # As printed: the promotion gate's defaults apply (the floor, no regression against v7).
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    hall.manifests["v6"] = path
    hall.apply("v6")
    vm = hall.settled("Ready", "v6")
    assert health(vm) == "Healthy"


def test_8_the_bridge_forwards_every_prediction_across_a_central_outage(hall: Hall) -> None:
    namespace = f"{hall.ns}-central"
    hall.cluster.apply("central-broker", central.objects(namespace, hall.nodes[0]))
    central_ns = ("kubectl", "-n", namespace)
    hall.cluster.run(*central_ns, "rollout", "status", f"deployment/{central.NAME}", "--timeout=300s")
    bridge = {
        "broker.bridge.enabled": "true",
        "broker.bridge.address": f"{central.NAME}.{namespace}:{central.PORT}",
        "broker.bridge.tls.enabled": "false",
    }
    hall.cluster.run("helm", "upgrade", hall.cluster.hall.name, str(ROOT / "charts" / "vibration-edge"),
                     "--namespace", hall.ns, "--reuse-values", "--wait", "--timeout=300s",
                     *(a for key, value in bridge.items() for a in ("--set", f"{key}={value}")))  # fmt: skip
    subscriber = central.CentralSubscriber(hall.cluster.hall.topic_prefix)
    try:
        with port_forward(hall.cluster, central.NAME, central.PORT, namespace=namespace) as url:
            subscriber.connect(url)
            hall.wait("serving again after the broker's restart", lambda vm: vm["status"].get("readyNodes")
                      == f"{len(hall.nodes)}/{len(hall.nodes)}")  # fmt: skip
            with hall.mqtt() as (sensor, _):
                # The bridge connects some seconds after the hall broker's restart; until then there
                # is no session to queue in (Mosquitto drops what comes before a bridge's first connect).
                deadline = time.monotonic() + 90
                while subscriber.wait_for(sensor.publish(1), timeout_s=2):
                    assert time.monotonic() < deadline, "the bridge forwarded nothing in 90 s"
                with sensor.streaming(rate_hz=10) as sent:
                    time.sleep(2)
                    subscriber.disconnect()
                    hall.cluster.run(*central_ns, "scale", f"deployment/{central.NAME}", "--replicas=0")
                    hall.cluster.run(*central_ns, "wait", "--for=delete", "pod", "-l",
                                     f"app.kubernetes.io/name={central.NAME}", "--timeout=120s")  # fmt: skip
                    time.sleep(5)  # predictions flow while the central broker is away
                    hall.cluster.run(*central_ns, "scale", f"deployment/{central.NAME}", "--replicas=1")
                    hall.cluster.run(*central_ns, "rollout", "status", f"deployment/{central.NAME}",
                                     "--timeout=300s")  # fmt: skip
                    time.sleep(2)
        with port_forward(hall.cluster, central.NAME, central.PORT, namespace=namespace) as url:
            subscriber.connect(url)
            missing = subscriber.wait_for(set(sent), timeout_s=120)
    finally:
        subscriber.disconnect()
    assert len(sent) > 50
    assert not missing, f"{len(missing)} of {len(sent)} predictions never reached the central broker"


def test_7_a_gateway_rebooted_while_the_registry_is_down_serves_from_its_cache(hall: Hall) -> None:
    node_ctl = os.environ.get("VIBRATION_E2E_NODE_CTL")
    if not node_ctl:
        pytest.skip("VIBRATION_E2E_NODE_CTL is not set: no command to reboot a gateway of this cluster")
    gateway = hall.nodes[1]
    active = hall.vm()["status"]["active"]["version"]
    pod = hall.pods()[gateway]["metadata"]["name"]
    # The registry goes first: a pod of it on the stopped node could not be deleted until it is back.
    hall.kubectl("scale", "deployment/minio", "--replicas=0")
    stopped = False
    try:
        hall.kubectl("wait", "--for=delete", "pod", "-l", "app.kubernetes.io/name=minio", "--timeout=120s")
        before = _init_started(hall, pod)
        subprocess.run([node_ctl, "stop", gateway], check=True, timeout=120)
        stopped = True
        subprocess.run([node_ctl, "start", gateway], check=True, timeout=120)
        stopped = False
        # The same pod, its containers started again by the rebooted kubelet: validate ran again.
        deadline = time.monotonic() + 300
        while _init_started(hall, pod) == before or not _ready(hall.json(f"pod/{pod}")):
            assert time.monotonic() < deadline, f"{pod} did not start again after the reboot"
            time.sleep(2)
        report = hall.json(f"pod/{pod}")["status"]["initContainerStatuses"][0]["state"]["terminated"]
        assert '"source":"cache"' in report.get("message", ""), report
        vm = hall.wait(f"{gateway} serving {active} from its cache", lambda vm: node_status(vm, gateway)
                       .get("reason") == "validated from this node's model cache")  # fmt: skip
        assert (node_status(vm, gateway).get("serving") or {}).get("version") == active
        with hall.mqtt() as (sensor, dashboard):
            keys = sensor.publish(30, rate_hz=30)
            assert set(dashboard.wait_for(keys)) >= keys
        assert hall.pod_metric(pod, "vibration_infer_ready") == 1
    finally:
        if stopped:  # whatever failed, the gateway comes back for the tests after this one
            subprocess.run([node_ctl, "start", gateway], check=False, timeout=120)
        hall.kubectl("scale", "deployment/minio", "--replicas=1")


def _init_started(hall: Hall, pod: str) -> str:
    statuses = hall.json(f"pod/{pod}")["status"].get("initContainerStatuses") or [{}]
    return str(((statuses[0].get("state") or {}).get("terminated") or {}).get("startedAt"))


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def test_10_deleting_the_model_removes_its_pods_and_configmaps(hall: Hall) -> None:
    hall.kubectl("delete", f"vibrationmodel/{MODEL}", "--wait", "--timeout=120s")
    hall.wait_gone(MODEL)
    assert not hall.targets()
