"""Argo CD's health check of VibrationModel (examples/gitops/health/vibrationmodel.lua), run in Lua 5.1.

Argo CD's gopher-lua is Lua 5.1; lupa's Lua 5.1 runtime runs the same script, sandboxed as
Argo CD does (no os, io, require, load...). Used on sample objects by the chart tests and on
the real objects of a real cluster by the e2e tests.
"""

from __future__ import annotations

from typing import Any

from vibration_testkit.helm import ROOT

GITOPS = ROOT / "examples" / "gitops"
SCRIPT = (GITOPS / "health" / "vibrationmodel.lua").read_text()
# Globals a health check has no business with; Argo CD's sandbox does not offer them either.
UNSAFE = (
    "os",
    "io",
    "require",
    "dofile",
    "loadfile",
    "load",
    "loadstring",
    "package",
    "debug",
    "module",
    "python",
)


def run_health(obj: dict[str, Any]) -> dict[str, str]:
    """The script's answer for `obj`: ``{"status": ..., "message": ...}``."""
    import lupa.lua51  # noqa: PLC0415 - callers skip when lupa has no Lua 5.1 runtime

    runtime = lupa.lua51.LuaRuntime(register_eval=False, register_builtins=False)
    runtime.execute(" ".join(f"{name} = nil;" for name in UNSAFE))
    runtime.globals().obj = runtime.table_from(obj, recursive=True)
    result = runtime.execute(SCRIPT)
    return {str(key): str(value) for key, value in result.items()}
