"""``vibration-infer serve``: the node's serving loop (MQTT → features → model → predictions, alerts).

`main.run` is the whole program. The layers, top down (import-linter checks
them, `pyproject.toml`):

- `main` (the process: flags, logging, signals) and `app` (the composition
  root: builds the link, the batch processor, the endpoints and the swap, and
  wires them);
- the parts: `responder` (a batch answered: model, answers, alerts,
  metrics, drift, shadow) over `batcher` (windows to answers) and `alerts`
  (debounce), `swap` (a new target, validated in-process) with `targets`
  (the target file), `candidate` (the in-process validation) and `shadow`,
  `http` and `metrics` (what the pod shows), `memory`, and the two MQTT clients: `wire` (the
  project's own, the default: `wire.codec`, `wire.parser`, `wire.outbound`,
  `wire.connection`, `wire.link`) and `paho_link` (the paho-mqtt adapter);
- `link` (the transport types `Incoming` and `Outgoing`, and the `Link`
  protocol both clients provide);
- `settings` (what it reads), one class over its field groups `mqtt_settings`,
  `model_settings` and `loop_settings`.

Nothing is imported here, so importing one part (the codec, say) does not
load the whole program.
"""
