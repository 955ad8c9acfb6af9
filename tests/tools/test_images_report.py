"""images_report on tiny docker archives made in tmp_path: figures, shared layers, targets, refusals."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from typing import TYPE_CHECKING

import pytest

import images_report

if TYPE_CHECKING:
    from pathlib import Path

BASE_FILES = {"usr/lib/python3.11/os.py": b"import sys\n" * 400}
APP_FILES = {"app/.venv/lib/python3.11/site-packages/kopf/__init__.py": b"x = 1\n" * 300}
NUMPY_FILES = {"app/.venv/lib/python3.11/site-packages/numpy/__init__.py": b"y = 2\n" * 300}


def layer_tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as layer:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            layer.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def docker_archive(path: Path, tags: list[str], layers: list[bytes]) -> Path:
    """What `docker save` writes: one tar per layer, a config with rootfs.diff_ids, manifest.json."""
    diff_ids = [f"sha256:{hashlib.sha256(layer).hexdigest()}" for layer in layers]
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    names = [f"{d.removeprefix('sha256:')}.tar" for d in diff_ids]
    with tarfile.open(path, "w") as archive:
        for name, layer in zip(names, layers, strict=True):
            add(archive, name, layer)
        add(archive, config_name, config)
        manifest = [{"Config": config_name, "RepoTags": tags, "Layers": names}]
        add(archive, "manifest.json", json.dumps(manifest).encode())
    return path


def gzip_size(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=6, mtime=0))


@pytest.fixture
def base_layer() -> bytes:
    return layer_tar(BASE_FILES)


@pytest.fixture
def base(tmp_path: Path, base_layer: bytes) -> Path:
    return docker_archive(tmp_path / "python-3.11-slim.tar", ["python:3.11-slim"], [base_layer])


def operator(tmp_path: Path, base_layer: bytes, app: dict[str, bytes]) -> Path:
    tags = ["ghcr.io/vibration-edge/vibration-operator:0.1.0"]
    return docker_archive(tmp_path / "vibration-operator.tar", tags, [base_layer, layer_tar(app)])


def infer(tmp_path: Path, base_layer: bytes) -> Path:
    layers = [base_layer, layer_tar(NUMPY_FILES)]
    return docker_archive(tmp_path / "vibration-infer.tar", ["localhost/vibration-infer:0.1.0"], layers)


def test_figures_sum_the_layer_tars_and_their_gzip_sizes(
    tmp_path: Path, base_layer: bytes, base: Path
) -> None:
    app_layer = layer_tar(APP_FILES)
    [image] = images_report.measure(operator(tmp_path, base_layer, APP_FILES), {})
    assert image.tags == ("ghcr.io/vibration-edge/vibration-operator:0.1.0",)
    assert image.repos == {"vibration-operator"}
    assert len(image.layers) == 2
    assert image.unpacked == len(base_layer) + len(app_layer)
    assert image.pulled_fresh == gzip_size(base_layer) + gzip_size(app_layer)
    assert image.ml_packages == "none"
    base_ids = frozenset(d for entry in images_report.read_manifest(base) for d in entry.diff_ids)
    assert image.pulled_cached(base_ids) == gzip_size(app_layer)  # the shared layer is not pulled again


def test_a_layer_shared_by_two_archives_is_measured_once(
    tmp_path: Path, base_layer: bytes, base: Path
) -> None:
    seen: dict[str, images_report.Layer] = {}
    [from_base] = images_report.measure(base, seen)
    [from_infer] = images_report.measure(infer(tmp_path, base_layer), seen)
    assert from_infer.layers[0] is from_base.layers[0]
    assert len(seen) == 2
    assert from_infer.ml_packages == "numpy"


def test_the_report_shows_fresh_and_cached_pulls_and_writes_markdown(
    tmp_path: Path, base_layer: bytes, base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    operator(tmp_path, base_layer, APP_FILES)
    infer(tmp_path, base_layer)
    (tmp_path / "vibration-infer.tags").write_text("localhost/vibration-infer:0.1.0\n")
    page = tmp_path / "images.md"  # written after the directory was listed
    assert images_report.main([str(tmp_path), "--base", str(base), "--markdown", str(page), "--check"]) == 0
    out, err = capsys.readouterr()
    assert "pulled on a fresh node" in out
    assert "pulled when the base is cached" in out
    assert "1 of 2 (" in out  # the operator's and the inference image's base layer
    assert "1 of 1 (100% of the pull)" in out  # the base archive against itself
    assert out.count("met ") == 3
    assert "ignored, not *.tar: vibration-infer.tags" in err  # nothing is skipped silently
    markdown = page.read_text()
    assert markdown.startswith("# Image sizes")
    assert "| vibration-operator.tar | ghcr.io/vibration-edge/vibration-operator:0.1.0 | 2 |" in markdown
    assert "- met: vibration-operator carries no numpy/scipy/onnxruntime" in markdown


def test_check_names_an_operator_that_carries_numpy(
    tmp_path: Path, base_layer: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    archives = [operator(tmp_path, base_layer, NUMPY_FILES), infer(tmp_path, base_layer)]
    assert images_report.main([str(path) for path in archives]) == 0  # a report without --check
    assert images_report.main([*map(str, archives), "--check"]) == 1
    err = capsys.readouterr().err
    assert (
        "target MISSED: vibration-operator carries no numpy/scipy/onnxruntime (vibration-operator.tar: numpy)"
        in err
    )
    assert err.count("target ") == 1


def test_check_names_the_size_targets_missed(
    tmp_path: Path, base_layer: bytes, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(images_report, "INFER_PULLED_LIMIT", 100)
    monkeypatch.setattr(images_report, "OPERATOR_UNPACKED_LIMIT", 100)
    archives = [operator(tmp_path, base_layer, APP_FILES), infer(tmp_path, base_layer)]
    assert images_report.main([*map(str, archives), "--check"]) == 1
    err = capsys.readouterr().err
    assert "target MISSED: vibration-infer pulled on a fresh node <= 0.0 MB (vibration-infer.tar:" in err
    assert "target MISSED: vibration-operator unpacked <= 0.0 MB (vibration-operator.tar:" in err


def test_check_fails_when_an_image_with_a_target_is_absent(
    tmp_path: Path, base_layer: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    assert images_report.main([str(infer(tmp_path, base_layer)), "--check"]) == 1
    err = capsys.readouterr().err
    assert "target NOT MEASURED: vibration-operator unpacked" in err
    assert "no archive tagged vibration-operator" in err


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "not a tar file"),
        ({"repositories": b"{}"}, "manifest.json (one being written has none yet) is missing"),
        ({"manifest.json": b"[{}]"}, "an image's Config in manifest.json is missing"),
        (
            {"manifest.json": b'[{"Config": "c.json", "Layers": ["l.tar"]}]'},
            "the config c.json named by manifest.json is missing",
        ),
        (
            {"manifest.json": b'[{"Config": "c.json", "Layers": ["l.tar"]}]', "c.json": b"{}"},
            "rootfs.diff_ids for the 1 layers in c.json is missing",
        ),
        (
            {
                "manifest.json": b'[{"Config": "c.json", "Layers": ["l.tar"]}]',
                "c.json": b'{"rootfs": {"diff_ids": ["sha256:0"]}}',
            },
            "the layer l.tar named by manifest.json is missing",
        ),
    ],
)
def test_a_file_that_is_not_a_docker_archive_is_refused_by_name(
    tmp_path: Path, content: dict[str, bytes] | None, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "image.tar"
    if content is None:
        path.write_text("an image, honestly\n")
    else:
        with tarfile.open(path, "w") as archive:
            for name, data in content.items():
                add(archive, name, data)
    assert images_report.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: not a docker archive (`docker save IMAGE -o FILE` format): {problem}" in err


def test_a_layer_that_is_not_a_tar_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = docker_archive(tmp_path / "odd.tar", ["odd:1"], [b"not a tar" * 200])
    assert images_report.main([str(path)]) == 2
    assert "is not an uncompressed tar" in capsys.readouterr().err


def test_a_directory_without_archives_and_a_missing_file_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert images_report.main([str(tmp_path)]) == 2
    assert f"{tmp_path}: the directory holds no *.tar archive" in capsys.readouterr().err
    assert images_report.main([str(tmp_path / "gone.tar")]) == 2
    assert f"{tmp_path / 'gone.tar'}: no such file" in capsys.readouterr().err


def test_an_archive_cut_short_is_refused_as_truncated(
    tmp_path: Path, base_layer: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    path = infer(tmp_path, base_layer)
    path.write_bytes(path.read_bytes()[: len(base_layer) + 1024])  # as when read while still being written
    assert images_report.main([str(path)]) == 2
    assert (
        f"{path}: not a docker archive (`docker save IMAGE -o FILE` format): truncated"
        in capsys.readouterr().err
    )
