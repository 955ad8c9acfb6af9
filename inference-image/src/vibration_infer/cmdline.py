"""The flags of both commands (``validate`` and ``serve``), in one place.

Flags are generated from a pydantic settings class: ``--mqtt-url`` for the
field ``mqtt_url``, so a setting and its flag cannot drift apart. Secrets
get no flag (a flag shows in ``ps`` and in the pod spec). A flag that is
given wins over the ``VIBRATION_*`` environment the settings class reads.
``--log-level`` and ``--log-format`` feed `vibration_core.logs.setup_logging`.
Nothing here imports MQTT, HTTP or a runtime: the init container pays only
for what it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from vibration_infer.errors import UsageError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Collection

    from pydantic.fields import FieldInfo

Settings = TypeVar("Settings", bound=BaseModel)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def add_settings_flags(
    parser: argparse.ArgumentParser,
    settings: type[BaseModel],
    *,
    no_flag: Collection[str] = (),
    pairs: Collection[str] = (),
    lists: Collection[str] = (),
    bool_switches: bool = False,
) -> None:
    """One flag per field of `settings`; `pairs` repeat as LABEL=VALUE, `lists` as LABEL."""
    for name, info in settings.model_fields.items():
        if name in no_flag:
            continue
        flag = "--" + name.replace("_", "-")
        described = f"{info.description}{_default_of(info)}"
        if name in pairs:
            parser.add_argument(flag, action="append", metavar="LABEL=VALUE", help=f"{described} Repeatable.")
        elif name in lists:
            parser.add_argument(flag, action="append", metavar="LABEL", help=f"{described} Repeatable.")
        elif bool_switches and info.annotation is bool:
            parser.add_argument(flag, action="store_const", const=True, help=described)
        else:
            parser.add_argument(flag, metavar=name.upper(), help=described)
    parser.add_argument("--log-level", default="INFO", choices=LOG_LEVELS)
    parser.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="json in a cluster, text locally."
    )


def _default_of(info: FieldInfo) -> str:
    """`` (default: X)`` for a field with a plain default, else nothing (required or computed)."""
    if info.default_factory is not None:
        empty = info.default_factory()  # type: ignore[call-arg]  # a no-argument factory (dict, list)
        return " (default: none)" if not empty else ""
    if info.is_required() or info.default is None:
        return ""
    return f" (default: {info.default})"


def settings_from_flags(
    settings: type[Settings],
    parsed: argparse.Namespace,
    *,
    no_flag: Collection[str] = (),
    pairs: Collection[str] = (),
) -> Settings:
    """`settings` from the flags given, over the environment; `UsageError` names the first bad one."""
    given: dict[str, Any] = {
        name: getattr(parsed, name)
        for name in settings.model_fields
        if name not in no_flag and getattr(parsed, name, None) is not None
    }
    for name in given.keys() & set(pairs):
        given[name] = label_pairs(name, given[name])
    try:
        return settings(**given)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        raise UsageError(f"{where}: {first['msg']}") from None


def label_pairs(name: str, items: list[str]) -> dict[str, str]:
    """``["bearing_fault=0.9", ...]`` as a dict; `UsageError` names the flag of a malformed item."""
    out = {}
    for item in items:
        label, sep, value = item.partition("=")
        if not sep or not label:
            raise UsageError(f"--{name.replace('_', '-')} takes LABEL=VALUE, got {item!r}")
        out[label] = value
    return out
