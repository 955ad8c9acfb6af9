"""Every setting of ``vibration-infer serve`` and ``validate`` can be given as its flag.

A flag's value arrives as a string; the field's type must accept the string form of its own
default (``--predictions-qos 0`` was once refused: a Literal of ints takes no string), and
a value other than the default must arrive (a flag the settings ignored would not).
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from vibration_infer import cli
from vibration_infer.errors import UsageError
from vibration_infer.serve import main as serve_main
from vibration_infer.serve.settings import ServeSettings
from vibration_infer.settings import ValidateSettings

SERVE_REQUIRED: dict[str, Any] = {"mqtt_url": "mqtt://broker:1883", "model_id": "spindle"}
VALIDATE_REQUIRED: dict[str, Any] = {"model_uri": "file:///models/m/v1/model.onnx", "test_data": "/data"}

SERVE_BASE = ["--mqtt-url", "mqtt://broker:1883", "--model-id", "spindle"]
VALIDATE_BASE = ["--model-uri", "file:///models/m/v1/model.onnx", "--test-data", "/data"]


def scalar_defaults(settings: type[Any], skip: frozenset[str]) -> list[tuple[str, Any]]:
    out = []
    for name, info in settings.model_fields.items():
        default = info.default
        if name in skip or default is None or not isinstance(default, str | int | float | Path):
            continue
        if isinstance(default, bool):
            continue  # switches: given or not
        out.append((name, default))
    return out


SERVE_SKIP = serve_main._NO_FLAG | serve_main._PAIRS | serve_main._LISTS
VALIDATE_SKIP = cli._NO_FLAG | cli._PAIRS


@pytest.mark.parametrize(("name", "default"), scalar_defaults(ServeSettings, SERVE_SKIP))
def test_every_serve_setting_takes_its_flag(name: str, default: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(f"VIBRATION_{name.upper()}", raising=False)
    flag = "--" + name.replace("_", "-")
    parsed = serve_main._parser().parse_args([*SERVE_BASE, flag, str(default)])
    assert getattr(serve_main.build_settings(parsed), name) == default


@pytest.mark.parametrize(("name", "default"), scalar_defaults(ValidateSettings, VALIDATE_SKIP))
def test_every_validate_setting_takes_its_flag(
    name: str, default: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(f"VIBRATION_{name.upper()}", raising=False)
    flag = "--" + name.replace("_", "-")
    settings = cli.parse_validate_args(["validate", *VALIDATE_BASE, flag, str(default)])
    assert getattr(settings, name) == default


def test_predictions_qos_0_from_the_flag_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed = serve_main._parser().parse_args([*SERVE_BASE, "--predictions-qos", "0"])
    assert serve_main.build_settings(parsed).predictions_qos == 0
    monkeypatch.setenv("VIBRATION_PREDICTIONS_QOS", "0")
    assert ServeSettings(mqtt_url="mqtt://broker:1883", model_id="spindle").predictions_qos == 0
    monkeypatch.setenv("VIBRATION_PREDICTIONS_QOS", "2")  # not offered (see its description)
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        ServeSettings(mqtt_url="mqtt://broker:1883", model_id="spindle")


def other_value(settings: type[Any], required: dict[str, Any], name: str, default: Any) -> Any:
    """A valid value of field `name` other than its default (the model's own rules decide)."""
    annotation = settings.model_fields[name].annotation
    choices = [c for c in typing.get_args(annotation) if c != default and isinstance(c, type(default))]
    if isinstance(default, Path):
        candidates: list[Any] = [Path(f"{default}-other")]
    elif isinstance(default, str):
        candidates = [*choices, f"{default}x", "other"]
    elif isinstance(default, int):
        candidates = [*choices, default + 1, default - 1]
    else:
        candidates = [default + 0.125, default / 2, default - 0.125]
    for candidate in candidates:
        try:
            settings(**(required | {name: candidate}))
        except ValueError:
            continue
        return candidate
    pytest.fail(f"no valid value for {name} other than {default!r}")


@pytest.mark.parametrize(("name", "default"), scalar_defaults(ServeSettings, SERVE_SKIP))
def test_every_serve_flag_sets_its_setting(name: str, default: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(f"VIBRATION_{name.upper()}", raising=False)
    value = other_value(ServeSettings, SERVE_REQUIRED, name, default)
    parsed = serve_main._parser().parse_args([*SERVE_BASE, "--" + name.replace("_", "-"), str(value)])
    assert getattr(serve_main.build_settings(parsed), name) == value != default


@pytest.mark.parametrize(("name", "default"), scalar_defaults(ValidateSettings, VALIDATE_SKIP))
def test_every_validate_flag_sets_its_setting(
    name: str, default: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(f"VIBRATION_{name.upper()}", raising=False)
    value = other_value(ValidateSettings, VALIDATE_REQUIRED, name, default)
    settings = cli.parse_validate_args(
        ["validate", *VALIDATE_BASE, "--" + name.replace("_", "-"), str(value)]
    )
    assert getattr(settings, name) == value != default


def test_the_share_group_comes_from_its_flag_or_the_environment_and_a_bad_one_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VIBRATION_MQTT_SHARE_GROUP", raising=False)

    def share_group(*flags: str) -> str | None:
        parsed = serve_main._parser().parse_args([*SERVE_BASE, *flags])
        return serve_main.build_settings(parsed).mqtt_share_group

    assert share_group() is None, "by default a pod reads every window"
    assert share_group("--mqtt-share-group", "spindle-classifier") == "spindle-classifier"
    monkeypatch.setenv("VIBRATION_MQTT_SHARE_GROUP", "from-env")
    assert share_group() == "from-env"
    for bad in ("", "hall/a", "+", "g" * 129):
        with pytest.raises(UsageError) as caught:
            share_group("--mqtt-share-group", bad)
        assert caught.value.detail.startswith("mqtt_share_group: Value error, share group ")
        assert "must be 1 to 128 characters from A-Z, a-z, 0-9, '.', '_' and '-'" in caught.value.detail


def test_a_topic_prefix_serve_cannot_use_is_a_usage_error_not_a_crash() -> None:
    # It used to pass the settings and crash the pod once serving started (exit 70, a crash loop).
    parsed = serve_main._parser().parse_args([*SERVE_BASE, "--topic-prefix", "factory//hall-a"])
    with pytest.raises(UsageError) as caught:
        serve_main.build_settings(parsed)
    assert caught.value.detail == (
        "topic_prefix: Value error, topic prefix 'factory//hall-a' must not contain an empty level ('//')"
    )


TYPED_IN = "hunter2-never-printed"


@pytest.mark.parametrize(
    ("parse", "flag"),
    [
        (lambda argv: serve_main._parser().parse_args([*SERVE_BASE, *argv]), "--mqtt-password"),
        (lambda argv: cli.parse_validate_args(["validate", *VALIDATE_BASE, *argv]), "--s3-access-key"),
        (lambda argv: cli.parse_validate_args(["validate", *VALIDATE_BASE, *argv]), "--s3-secret-key"),
    ],
    ids=["serve", "validate-access", "validate-secret"],
)
def test_a_secret_given_as_a_flag_is_refused_and_not_printed(
    parse: Any, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Once, argparse took `--s3-secret-key X` as short for `--s3-secret-key-file X` and the
    # termination log read "cannot read secret file X".
    for argv in ([flag, TYPED_IN], [f"{flag}={TYPED_IN}"]):
        with pytest.raises(SystemExit) as exited:
            parse(argv)
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert TYPED_IN not in err
        assert f"{flag} is not taken as a flag" in err
        assert f"{flag}-file" in err, "and says what to use instead"


def test_a_flag_is_spelled_out_not_abbreviated(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        serve_main._parser().parse_args([*SERVE_BASE, "--keepalive", "45"])
    assert "unrecognized arguments: --keepalive" in capsys.readouterr().err


def test_the_log_flags_read_the_environment_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIBRATION_LOG_LEVEL", "debug")
    monkeypatch.setenv("VIBRATION_LOG_FORMAT", "json")
    parsed = serve_main._parser().parse_args(SERVE_BASE)
    assert (parsed.log_level, parsed.log_format) == ("DEBUG", "json")
    flagged = serve_main._parser().parse_args([*SERVE_BASE, "--log-level", "ERROR", "--log-format", "text"])
    assert (flagged.log_level, flagged.log_format) == ("ERROR", "text"), "a flag wins over the environment"
    monkeypatch.setenv("VIBRATION_LOG_LEVEL", "LOUD")
    with pytest.raises(SystemExit):
        serve_main._parser().parse_args(SERVE_BASE)


def test_the_alert_classes_arrive_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    # What the operator sets for spec.alerts: JSON lists and a JSON map.
    monkeypatch.setenv("VIBRATION_NORMAL_LABELS", '["healthy", "idle"]')
    monkeypatch.setenv("VIBRATION_ALERT_SEVERITY", '{"bearing": "critical"}')
    settings = serve_main.build_settings(serve_main._parser().parse_args(SERVE_BASE))
    assert settings.normal_labels == ("healthy", "idle")
    assert settings.alert_severity == {"bearing": "critical"}
