"""The hot swap's channel: which target the operator names now, and whether it is the model serving.

Channel: a watched file, ``/etc/vibration-edge/target/target.json`` by
default, projected into the pod from a ConfigMap that only the operator may
write. Who may change it is then decided by Kubernetes RBAC, which is the
authentication a model target needs; an MQTT control topic would need a
second set of per-client ACLs kept in step with the operator, and any
client with a leaked sensor password on a misconfigured broker could point
every pod of a hall at a model of its choosing. The file is polled (its
content hash, every `target_poll_s`): kubelet updates a projected ConfigMap
by swapping a symlink, which inotify follows badly, and one small read a
second costs nothing. The pod trusts the file for *which* model, never for
its bytes: the artifact's sha256 is checked against the target and the card
before anything loads.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vibration_core.errors import TargetError
from vibration_core.target import MAX_TARGET_BYTES, ModelTarget, parse_target

if TYPE_CHECKING:
    from pathlib import Path

    from vibration_infer.loader import LoadedModel

# The hot swap's logger: its events read as one story, whichever module tells a part.
logger = logging.getLogger("vibration_infer.serve.swap")


@dataclass(frozen=True)
class TargetChange:
    """A target file whose content differs from the last one seen."""

    digest: str
    """sha256 of the file's bytes."""
    target: ModelTarget | None
    """The parsed target, or None when the file does not parse."""
    problem: str = ""


class TargetWatcher:
    """Reports each new content of the target file once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last: str | None = None

    def poll(self) -> TargetChange | None:
        """The new target, if the file changed since the last poll; None otherwise or if absent."""
        try:
            with self.path.open("rb") as handle:
                data = handle.read(MAX_TARGET_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning(
                "target_unreadable", extra={"path": self.path, "reason": exc.strerror or type(exc).__name__}
            )
            return None
        digest = hashlib.sha256(data).hexdigest()
        if digest == self._last:
            return None
        self._last = digest
        try:
            return TargetChange(digest, parse_target(data, str(self.path)))
        except TargetError as exc:
            return TargetChange(digest, None, exc.detail)


def is_serving(model: LoadedModel | None, target: ModelTarget) -> bool:
    """Whether `model` is `target`: its version, and its digest where the target names one.

    The same artifact under a new version (a retry) is another target: its card is validated
    and its version served.
    """
    if model is None or model.card.version != target.version:
        return False
    return target.sha256 is None or model.sha256 == target.sha256
