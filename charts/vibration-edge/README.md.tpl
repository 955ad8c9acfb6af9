# vibration-edge chart

Version {{ version }}, app version {{ app_version }}. One factory hall of vibration-edge: the
operator that rolls out vibration classifiers to the hall's K3s gateways (each node validates a
new model on its own test data before it serves it), the `VibrationModel` CRD, and optionally
the hall's Mosquitto broker, the Coral Edge TPU device plugin, and monitoring of the serving
pods. Kubernetes 1.28 or newer, amd64 and arm64.

## Install one hall

Each gateway first gets its model cache and its labelled test set (as root on the node):

```bash
install -d -o 65532 -g 65532 -m 0750 /var/lib/vibration-edge/cache
install -d -m 0755 /var/lib/vibration-edge/testdata && cp testset.parquet /var/lib/vibration-edge/testdata/
```

Then the hall (from the repository's root):

```bash
kubectl create namespace hall-a
kubectl -n hall-a create secret generic minio-credentials --from-literal=accessKey=... --from-literal=secretKey=...
# The broker refuses anonymous clients: users (mosquitto_passwd) and ACLs first.
mosquitto_passwd -c -b passwordfile serving '<password>'
kubectl -n hall-a create secret generic hall-a-mqtt-users \
  --from-file=passwordfile --from-file=aclfile=examples/broker/aclfile
kubectl -n hall-a create secret generic mqtt-serving --from-literal=username=serving --from-literal=password='<password>'
kubectl label node gw-1 gw-2 edge.vibration.io/hall=hall-a
helm install hall-a charts/vibration-edge -n hall-a --set registry.endpoint=http://minio.minio:9000 \
  --set registry.credentialsSecret=minio-credentials --set broker.auth.existingSecret=hall-a-mqtt-users
kubectl -n hall-a apply -f model-v3/vibrationmodel.yaml    # written by vibration-train publish
kubectl -n hall-a get vibrationmodels -w
```

`NOTES.txt` prints the commands that fit the values given (Secrets to create, the broker URL
for `spec.mqtt.broker`, how to label Coral nodes). To run halls from Git with Argo CD, see
`examples/gitops/` in the repository: an ApplicationSet makes one Application per hall folder,
and the VibrationModel health check (Lua) makes Argo CD show the truth about a rollout.

The `ci/` folder holds the scenarios the tests lint and render (CPU-only hall, Coral hall,
broker off, monitoring on, bridge on, cluster-wide).

## What it deploys

| object | when | notes |
|---|---|---|
| operator Deployment, ServiceAccount | always | one replica, `Recreate`: kopf runs standalone; kopf's liveness endpoint is probed |
| Role + RoleBinding per watched namespace | `operator.rbac.create` | exactly the operator's API calls, no wildcards |
| ClusterRole + binding: `list nodes` | `operator.rbac.create` | nodes are cluster-scoped; the operator lists them by each model's `nodeSelector` |
| ClusterRole + binding for the namespaced rules | `operator.watch.clusterWide` | instead of the Roles |
| `VibrationModel` CRD (`crds/`) | first install | a byte-for-byte copy of the repository's `crds/`, checked by a test |
| Mosquitto Deployment, Service, ConfigMap, PVC | `broker.enabled` | `set_tcp_nodelay true`, persistence, users and ACLs from a Secret |
| bridge section of the broker | `broker.bridge.enabled` | Mosquitto's own bridge; credentials from a Secret, assembled in memory by an init container |
| generic-device-plugin DaemonSet | `coral.devicePlugin.enabled` | on Coral nodes only; both Coral USB ids and `/dev/apex_*` |
| PodMonitor | `monitoring.podMonitor.enabled` | selects the serving pods by the labels the operator gives them |
| Grafana dashboard ConfigMap | `monitoring.dashboard.enabled` | label `grafana_dashboard` for Grafana's sidecar |

## Security

- Every container the chart renders runs with the restricted pod-security settings: non-root,
  read-only root file system, no privilege escalation, all capabilities dropped, seccomp
  `RuntimeDefault`, requests and limits. The serving pods the operator builds do too.
- The one exception is the Coral device plugin, which is privileged: it must follow host
  devices as they appear and change (the Coral USB re-enumerates under a new id after its first
  inference) and serve its socket in the kubelet's root-owned device-plugin directory. It mounts
  no service-account token and runs only on nodes labelled as Coral nodes.
- The serving pods mount hostPath volumes (node-local test data and the model cache that lets
  a rebooted gateway serve offline). The Pod Security Admission `baseline` and `restricted`
  levels refuse every hostPath, so a hall namespace cannot enforce them; label it
  `pod-security.kubernetes.io/warn: restricted` to keep the other findings visible.
- Values hold only names of Secrets, never their content. The operator's RBAC lists each verb
  it uses (`vibration-operator rbac` prints the same rules); only the operator mounts a
  service-account token.

## Upgrading and the CRD

Helm installs `crds/` on the first install only. It never upgrades or deletes a CRD, so after a
chart upgrade that changes the CRD apply it yourself (server-side, the CRD is large):

```bash
kubectl apply --server-side -f charts/vibration-edge/crds/
```

Uninstalling the chart leaves the CRD and every VibrationModel in place, and keeps the broker's
claim (`helm.sh/resource-policy: keep`). Delete the release's VibrationModels before uninstalling:
their finalizer (`edge.vibration.io/timers`) is removed only by a running operator, so a model
deleted afterwards stays Terminating until `kubectl patch vibm <name> --type merge -p
'{"metadata":{"finalizers":null}}'` releases it. With several halls in one cluster, the CRD is shared:
with Argo CD, let one Application own it (`examples/gitops/applicationset.yaml` does this).

## Coral Edge TPU

Label the gateways that carry a Coral (`edge.vibration.io/coral=true` by default) and enable
`coral.devicePlugin`. The plugin announces `coral.resourceName` (`squat.ai/coral`), the resource
the operator asks for in a serving pod on a Coral node. Enable the plugin in one release per
cluster: two plugins announcing the same resource on a node conflict. The plugin hands the
pod the USB device node the Coral had when the pod started; the serving pod validates a new
model inside the running pod (one TPU, one pod), so the device is opened once and stays open.

## Broker and bridge

The hall broker keeps retained messages, subscriptions and queued messages on its claim. With
`broker.bridge.enabled`, Mosquitto's own bridge forwards results, alerts, errors and node
status to a central broker; with `persistentSession` (the default) both ends keep the bridge's
session, so results queue (up to `maxQueuedMessages`) while the uplink is down and flow when it
returns. Raw windows stay in the hall unless a `topics` entry sends them.

## Values

{{ values_table }}
