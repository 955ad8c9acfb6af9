"""The flags of both commands (``validate`` and ``serve``), in one place.

Flags are generated from a pydantic settings class: ``--mqtt-url`` for the
field ``mqtt_url``, so a setting and its flag cannot drift apart. Secrets
get no flag (a flag shows in ``ps`` and in the pod spec): their names are
refused without the value being echoed, and no flag may be abbreviated
(``--s3-secret-key X`` would otherwise be ``--s3-secret-key-file X``). A flag that is
given wins over the ``VIBRATION_*`` environment the settings class reads.
``--log-level`` and ``--log-format`` feed `vibration_core.logs.setup_logging`.
Nothing here imports MQTT, HTTP or a runtime: the init container pays only
for what it uses.

Why not pydantic-settings' own CLI (``CliSettingsSource``, 2.16.3, the
newest release and the one in uv.lock). It does the rest (kebab-case flags,
descriptions as help, flags over ``VIBRATION_*``, repeated ``--x k=v``,
bool switches), but it cannot give a field no flag: ``CliSuppress`` only
hides the flag from ``--help`` and the value is still taken from argv (its
maintainers say so in pydantic-settings issue 505; the exclusion PR 962 was
closed). Reproduction::

    class S(BaseSettings):
        password: CliSuppress[SecretStr | None] = None
        recall: dict[str, float] = {}
        labels: tuple[str, ...] = ()
        node: str = Field("n", validation_alias=AliasChoices("node", "NODE_NAME"))

    parser = ArgumentParser()
    cli = CliSettingsSource(S, root_parser=parser, cli_kebab_case=True, cli_exit_on_error=False)
    S(_cli_settings_source=cli(parsed_args=parser.parse_args([...])))
    # ["--password", "hunter2"]  -> accepted: the secret is in ps and the pod spec
    # ["--recall", "bearing_fault"] -> SettingsError "Parsing error encountered for
    #     recall: not enough values to unpack (expected 2, got 1)": the field, not the flag
    # ["--labels", "a,b"] -> ("a", "b");  ["--NODE-NAME", "x"] -> an env alias is a flag

Its help also reads ``(default factory: _hostname)`` and ``--client-id null``
means None. What this module keeps: no flag at all for a secret, and an
error that names the flag and the form it takes.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError

from vibration_infer.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence

    from pydantic.fields import FieldInfo

Settings = TypeVar("Settings", bound=BaseModel)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")


def add_settings_flags(
    parser: argparse.ArgumentParser,
    settings: type[BaseModel],
    *,
    no_flag: Collection[str] = (),
    pairs: Collection[str] = (),
    lists: Collection[str] = (),
    bool_switches: bool = False,
) -> None:
    """One flag per field of `settings`; `pairs` repeat as LABEL=VALUE, `lists` as LABEL.

    A field in `no_flag` (a secret) gets a flag that only refuses, without echoing the value.
    """
    # Exact names only: argparse would take `--s3-secret-key X` as short for
    # `--s3-secret-key-file X`, and the report would name the secret as a missing file.
    parser.allow_abbrev = False
    for name, info in settings.model_fields.items():
        if name in no_flag:
            instead = (
                f"--{name.replace('_', '-')}-file or " if f"{name}_file" in settings.model_fields else ""
            )
            parser.add_argument(
                "--" + name.replace("_", "-"),
                action=_NoFlag,
                nargs="?",
                default=argparse.SUPPRESS,
                help=argparse.SUPPRESS,
                instead=f"{instead}VIBRATION_{name.upper()}",
            )
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
    # As every flag, read from VIBRATION_<NAME> when not given; checked by `type`, which argparse
    # also applies to a string default (its `choices` it checks only on the command line).
    parser.add_argument(
        "--log-level",
        default=os.environ.get("VIBRATION_LOG_LEVEL", "INFO"),
        type=_one_of(LOG_LEVELS, "VIBRATION_LOG_LEVEL", str.upper),
        metavar="{" + ",".join(LOG_LEVELS) + "}",
    )
    parser.add_argument(
        "--log-format",
        default=os.environ.get("VIBRATION_LOG_FORMAT", "text"),
        type=_one_of(LOG_FORMATS, "VIBRATION_LOG_FORMAT", str.lower),
        metavar="{" + ",".join(LOG_FORMATS) + "}",
        help="json in a cluster, text locally.",
    )


def _one_of(choices: tuple[str, ...], env: str, fold: Callable[[str], str]) -> Callable[[str], str]:
    def check(value: str) -> str:
        if fold(value) not in choices:
            raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(choices)} (flag or {env})")
        return fold(value)

    return check


class _NoFlag(argparse.Action):
    """A secret's flag: refused, naming what to use instead and never the value given."""

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str,
        *,
        instead: str,
        **kwargs: Any,  # noqa: ANN401 - argparse's own keywords, passed on as they are
    ) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.instead = instead

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        _namespace: argparse.Namespace,
        _values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> NoReturn:
        flag = option_string or self.option_strings[0]  # always given for an option; typeshed allows None
        parser.error(
            f"{flag} is not taken as a flag (a flag shows in ps and in the pod spec): use {self.instead}"
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
