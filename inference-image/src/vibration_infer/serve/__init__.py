"""``vibration-infer serve``: the node's serving loop (MQTT → features → model → predictions, alerts).

`run` is the whole program; the modules are its parts: `settings` (what it
reads), `link` (the broker session: `wire` with `mqtt5`, `wire_outbound` and
`wire_socket`, the default; `mqtt` on paho-mqtt), `batcher` (windows to answers), `alerts`
(debounce), `metrics` and `http` (what it shows), `swap` (a new target,
validated in-process) and `app` (the wiring).
"""

from __future__ import annotations

from vibration_infer.serve.main import run

__all__ = ["run"]
