"""The demo-k8s runner's one door to the cluster: kubectl and helm, run or (dry) printed."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    import demo_k8s_objects as objects

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MODEL = "spindle-classifier"
MIN_ACCURACY = 0.85
"""The hall's bar: every version must reach it on every gateway's test set."""
WAIT = "600s"
COMMAND_TIMEOUT_S = 1800.0
"""The longest any one command may take (the waits above are shorter): a hung one is killed and named."""
REGISTRY_SECRET = "minio-credentials"  # noqa: S105 - the name of a Secret, not its content
SERVING_SECRET = "mqtt-serving"  # noqa: S105 - same


class DemoError(Exception):
    """A step did not behave as expected."""


class Cluster:
    """Runs (or, dry, prints) kubectl and helm; keeps the manifests it applied."""

    def __init__(self, hall: objects.Hall, out: Path, *, dry_run: bool) -> None:
        self.hall, self.out, self.dry_run = hall, out, dry_run
        helm = ROOT / ".tools" / "bin" / "helm"
        self.helm = str(helm) if helm.is_file() else (shutil.which("helm") or "helm")
        self.kubectl = shutil.which("kubectl") or "kubectl"

    def run(self, *args: str, check: bool = True, quiet: bool = False) -> str:
        """Run a command (kubectl, helm, vibration-train) and return its stdout."""
        shown = " ".join(shlex.quote(a) for a in args)
        print(f"$ {shown}", flush=True)
        if self.dry_run:
            return ""
        tool = {"kubectl": self.kubectl, "helm": self.helm}.get(args[0], str(BIN / args[0]))
        try:
            done = subprocess.run(
                [tool, *args[1:]],
                capture_output=True,
                text=True,
                check=False,
                cwd=ROOT,
                timeout=COMMAND_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:  # killed by subprocess.run; a thread running it ends too
            raise DemoError(f"{args[0]} {args[1]} did not end within {COMMAND_TIMEOUT_S:g} s") from None
        if not quiet and done.stdout.strip():
            print(done.stdout.rstrip())
        if check and done.returncode != 0:
            raise DemoError(f"{args[0]} {args[1]} exited {done.returncode}: {done.stderr.strip()[-500:]}")
        return done.stdout

    def apply(self, name: str, manifests: list[dict[str, Any]], *, private: Path | None = None) -> None:
        """Write the manifests to demo-output/k8s/NAME.yaml (or, with secrets, `private`) and apply them."""
        path = (private or self.out) / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(manifests, sort_keys=False))
        self.run("kubectl", "apply", "--server-side", "--field-manager=vibration-demo", "-f", str(path))

    def kubectl_json(self, *args: str) -> Any:  # noqa: ANN401 - whatever the API server returns
        """`kubectl ... -o json`, parsed."""
        return json.loads(self.run("kubectl", *args, "-o", "json", quiet=True) or "{}")
