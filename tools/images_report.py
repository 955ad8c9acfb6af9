"""Report what each image costs a node, from `docker save` archives, and check the image targets.

    python tools/images_report.py DIR_OR_ARCHIVE... [--base python-3.11-slim.tar]
                                  [--markdown PATH] [--check]

`make images-report IMAGES=...` runs it. An archive is what `docker save IMAGE -o FILE`
writes (buildah and podman write the same): manifest.json, a config with
``rootfs.diff_ids``, one tar per layer; a directory stands for its ``*.tar`` files.
Per image it prints the tags, the number of layers, the unpacked size (the sum of
the layer tars), the bytes a node pulls on a fresh node and when the base image's
layers (those whose diff id is in the ``--base`` archive) are already cached, and
which of numpy/scipy/onnxruntime its layers carry. 1 MB is 10^6 bytes.

The pulled figures are an estimate of the registry's compressed layer sizes: each
layer tar is compressed here with gzip level 6, streaming, as registries serve gzip
layers. The pushing tool picks its own gzip implementation and level, so a
registry's figure differs by a few percent.

Targets (the report shows each; ``--check`` exits 1 and names each one missed):

- vibration-infer pulled on a fresh node <= 250 MB. A gateway that is new or wiped
  pulls every layer over the factory's link. Measured (the CPU image buildah built
  from this tree, 2026-12-06): 228.0 MB pulled, 682.1 MB unpacked; 66.7 MB of the
  pull is the base, so 161.3 MB when the base is cached. 250 MB holds with about 9 %
  to spare; the venv's largest parts are pyarrow (176 MB unpacked), scipy (143 MB),
  onnxruntime (80 MB) and numpy (71 MB): pyarrow is the lever if the margin runs out.
- vibration-operator unpacked <= 250 MB. Measured: 202.3 MB, of which 170.1 MB is
  python:3.11-slim and 32.2 MB the operator's venv (76.7 MB pulled fresh, 10.0 MB
  when the base is cached).
- vibration-operator carries no numpy, scipy or onnxruntime: no layer tar holds a
  member under ``site-packages/numpy/``, ``site-packages/scipy/`` or
  ``site-packages/onnxruntime/`` (the operator only builds manifests).

The training image has no target: it trains and publishes models away from the
gateways (measured: 787.4 MB unpacked, 259.5 MB pulled fresh).
No archive with a repository's tag is a failure under ``--check``, not a pass.

Exit codes: 0 done, 1 a target missed under ``--check``, 2 a file that is not a
docker archive (the message names the file and what is missing).

Longer than the others: it is one report (each image's layers, sizes and what
each package brings) whose parts read the same build output.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

MB = 1_000_000
GZIP_LEVEL = 6
ML_PACKAGES = ("numpy", "scipy", "onnxruntime")
INFER_REPO = "vibration-infer"
OPERATOR_REPO = "vibration-operator"
INFER_PULLED_LIMIT = 250 * MB
OPERATOR_UNPACKED_LIMIT = 250 * MB
NOT_ARCHIVE = "not a docker archive (`docker save IMAGE -o FILE` format)"


class ArchiveError(Exception):
    """An input is not a readable docker archive; the message names the file and the problem."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def _missing(path: Path, what: str) -> ArchiveError:
    return ArchiveError(path, f"{NOT_ARCHIVE}: {what} is missing")


@dataclass(frozen=True)
class Layer:
    """One layer tar: its size, the gzip estimate and which of ML_PACKAGES it holds."""

    diff_id: str
    size: int
    gzip_size: int
    ml_packages: frozenset[str]


@dataclass(frozen=True)
class Image:
    """One image of an archive, with its layers in manifest order."""

    archive: Path
    tags: tuple[str, ...]
    layers: tuple[Layer, ...]

    @property
    def repos(self) -> frozenset[str]:
        """Repository names without registry or tag (``ghcr.io/x/vibration-infer:1``: ``vibration-infer``)."""
        return frozenset(tag.rsplit("/", 1)[-1].split("@")[0].split(":")[0] for tag in self.tags)

    @property
    def unpacked(self) -> int:
        """Sum of the layer tar sizes."""
        return sum(layer.size for layer in self.layers)

    @property
    def pulled_fresh(self) -> int:
        """Estimated bytes pulled by a node that has none of the layers."""
        return self.pulled_cached(frozenset())

    def pulled_cached(self, base: frozenset[str]) -> int:
        """Estimated bytes pulled by a node that already has the layers whose diff ids are in ``base``."""
        return sum(layer.gzip_size for layer in self.layers if layer.diff_id not in base)

    @property
    def ml_packages(self) -> str:
        """Which of ML_PACKAGES any layer holds, or ``none``."""
        return ", ".join(sorted(frozenset().union(*(layer.ml_packages for layer in self.layers)))) or "none"


@dataclass(frozen=True)
class _Entry:
    tags: tuple[str, ...]
    layer_names: tuple[str, ...]
    diff_ids: tuple[str, ...]


class _GzipCounter:
    """Passes a layer's bytes on to the tar reader and counts them, raw and gzip-compressed."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._zip = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: the gzip container a blob has
        self.size = 0
        self.gzip_size = 0

    def read(self, size: int = 1 << 20) -> bytes:
        # The tar stream reader asks for a block at a time, so a layer is never held whole.
        data = self._raw.read(size if size >= 0 else 1 << 20)
        self.size += len(data)
        self.gzip_size += len(self._zip.compress(data))
        return data

    def drain(self) -> None:
        """Count what the tar reader left unread (the end-of-archive padding) and finish the gzip stream."""
        while self.read():
            pass
        self.gzip_size += len(self._zip.flush())


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[tarfile.TarFile]:
    if not path.is_file():
        raise ArchiveError(path, "no such file")
    try:
        # Opened apart from the `with` below so a non-tar reads differently from a truncated tar.
        archive = tarfile.open(path, "r:")  # noqa: SIM115 - closed by that `with`; docker save writes plain tar
    except tarfile.TarError as exc:
        raise ArchiveError(path, f"{NOT_ARCHIVE}: not a tar file ({exc})") from exc
    try:
        with archive:
            yield archive
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArchiveError(path, f"{NOT_ARCHIVE}: truncated or unreadable ({exc})") from exc


def _member(path: Path, archive: tarfile.TarFile, name: str, what: str) -> IO[bytes]:
    try:
        stream = archive.extractfile(name)  # follows the links of the legacy <id>/layer.tar layout
    except KeyError:
        raise _missing(path, what) from None
    if stream is None:
        raise _missing(path, f"{what} (as a file)")
    return stream


def _json(path: Path, archive: tarfile.TarFile, name: str, what: str) -> Any:  # noqa: ANN401 - unchecked JSON
    with _member(path, archive, name, what) as stream:
        try:
            return json.loads(stream.read())
        except ValueError as exc:
            raise ArchiveError(path, f"{NOT_ARCHIVE}: {what} is not JSON ({exc})") from exc


def _entries(path: Path, archive: tarfile.TarFile) -> list[_Entry]:
    manifest = _json(path, archive, "manifest.json", "manifest.json (one being written has none yet)")
    if not isinstance(manifest, list) or not manifest:
        raise _missing(path, "the list of images in manifest.json")
    entries = []
    for item in manifest:
        if not isinstance(item, dict) or not isinstance(item.get("Config"), str):
            raise _missing(path, "an image's Config in manifest.json")
        config_name, layers = item["Config"], item.get("Layers")
        if not isinstance(layers, list) or not all(isinstance(name, str) for name in layers):
            raise _missing(path, f"the Layers of {config_name} in manifest.json")
        config = _json(path, archive, config_name, f"the config {config_name} named by manifest.json")
        rootfs = config.get("rootfs") if isinstance(config, dict) else None
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
            raise _missing(path, f"rootfs.diff_ids for the {len(layers)} layers in {config_name}")
        entries.append(_Entry(tuple(item.get("RepoTags") or ()), tuple(layers), tuple(map(str, diff_ids))))
    return entries


def read_manifest(path: Path) -> list[_Entry]:
    """The images of an archive, checked to be a docker archive without reading the layers."""
    with _reading(path) as archive:
        return _entries(path, archive)


def _measure_layer(path: Path, archive: tarfile.TarFile, name: str, diff_id: str) -> Layer:
    counter = _GzipCounter(_member(path, archive, name, f"the layer {name} named by manifest.json"))
    found: set[str] = set()
    try:
        # Stream mode ("r|") calls only read(), which the counter has: hence the ignore.
        with tarfile.open(fileobj=counter, mode="r|") as layer:  # type: ignore[call-overload]
            for member in layer:
                found.update(p for p in ML_PACKAGES if f"site-packages/{p}/" in f"{member.name}/")
    except tarfile.TarError as exc:
        raise ArchiveError(
            path, f"{NOT_ARCHIVE}: the layer {name} is not an uncompressed tar ({exc})"
        ) from exc
    counter.drain()
    return Layer(diff_id, counter.size, counter.gzip_size, frozenset(found))


def measure(path: Path, seen: dict[str, Layer]) -> list[Image]:
    """Every image of one archive; ``seen`` holds the layers measured so far, by diff id."""
    images = []
    with _reading(path) as archive:
        for entry in _entries(path, archive):
            for name, diff_id in zip(entry.layer_names, entry.diff_ids, strict=True):
                # A diff id names the content: the base shared by every image is compressed once.
                if diff_id not in seen:
                    seen[diff_id] = _measure_layer(path, archive, name, diff_id)
            images.append(Image(path, entry.tags, tuple(seen[diff_id] for diff_id in entry.diff_ids)))
    return images


def collect(inputs: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """The archives to read (a directory gives its ``*.tar``) and the other files of those directories."""
    archives: list[Path] = []
    ignored: list[Path] = []
    for given in inputs:
        if given.is_dir():
            tars = sorted(given.glob("*.tar"))
            if not tars:
                raise ArchiveError(given, "the directory holds no *.tar archive")
            archives += tars
            ignored += sorted(p for p in given.iterdir() if p.suffix != ".tar")
        else:
            archives.append(given)
    return list(dict.fromkeys(archives)), ignored  # the same file given twice is read once


def mb(size: int) -> str:
    """A byte count in MB (10^6 bytes), as registries show sizes."""
    return f"{size / MB:,.1f} MB"


@dataclass(frozen=True)
class Verdict:
    """One target applied to one image; ``met`` is None when no archive carries the repository."""

    target: str
    figure: str
    met: bool | None

    @property
    def status(self) -> str:
        """How the target fared, as the report shows it."""
        return {True: "met", False: "MISSED", None: "NOT MEASURED"}[self.met]


def verdicts(images: list[Image]) -> list[Verdict]:
    """Every target against every image of its repository, and a verdict for a repository absent."""
    checks: list[tuple[str, str, Callable[[Image], tuple[str, bool]]]] = [
        (INFER_REPO, f"pulled on a fresh node <= {mb(INFER_PULLED_LIMIT)}",
         lambda image: (mb(image.pulled_fresh), image.pulled_fresh <= INFER_PULLED_LIMIT)),
        (OPERATOR_REPO, f"unpacked <= {mb(OPERATOR_UNPACKED_LIMIT)}",
         lambda image: (mb(image.unpacked), image.unpacked <= OPERATOR_UNPACKED_LIMIT)),
        (OPERATOR_REPO, f"carries no {'/'.join(ML_PACKAGES)}",
         lambda image: (image.ml_packages, image.ml_packages == "none")),
    ]  # fmt: skip
    out = []
    for repo, limit, judge in checks:
        matching = [image for image in images if repo in image.repos]
        if not matching:
            out.append(Verdict(f"{repo} {limit}", f"no archive tagged {repo}: not measured", None))
        for image in matching:
            figure, met = judge(image)
            out.append(Verdict(f"{repo} {limit}", f"{image.archive.name}: {figure}", met))
    return out


HEADER = ("archive", "tags", "layers", "unpacked", "pulled on a fresh node", "base layers",
          "pulled when the base is cached", "/".join(ML_PACKAGES))  # fmt: skip
NOTE = "Pulled: an estimate of the registry's compressed layer sizes (each layer tar, gzip level 6)."


def rows(images: list[Image], base: frozenset[str] | None) -> list[tuple[str, ...]]:
    """One row of cells per image, shared by the text and the markdown table."""
    out: list[tuple[str, ...]] = []
    for image in images:
        shared, cached = "no --base", "no --base"
        if base is not None:
            in_base = sum(layer.diff_id in base for layer in image.layers)
            share = 1 - image.pulled_cached(base) / max(image.pulled_fresh, 1)
            shared = f"{in_base} of {len(image.layers)} ({share:.0%} of the pull)"
            cached = mb(image.pulled_cached(base))
        tags = ", ".join(image.tags) or "(untagged)"
        sizes = (mb(image.unpacked), mb(image.pulled_fresh), shared, cached)
        out.append((image.archive.name, tags, str(len(image.layers)), *sizes, image.ml_packages))
    return out


def text_report(table: list[tuple[str, ...]], results: list[Verdict], base: str) -> str:
    """The table and the targets, aligned for a terminal."""
    widths = [max(len(row[i]) for row in [HEADER, *table]) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in [HEADER, *table]]  # fmt: skip
    lines += ["", f"{NOTE} MB: 10^6 bytes. Base: {base}.", "", "Targets:"]
    lines += [f"  {v.status:<12} {v.target}  ({v.figure})" for v in results]
    return "\n".join(lines)


def markdown_report(table: list[tuple[str, ...]], results: list[Verdict], base: str) -> str:
    """The same report as a markdown page."""
    lines = ["# Image sizes", "", f"{NOTE} MB: 10^6 bytes. Base: {base}.", ""]
    lines += [f"| {' | '.join(row)} |" for row in [HEADER, tuple("---" for _ in HEADER), *table]]
    lines += ["", "## Targets", "", *(f"- {v.status}: {v.target} ({v.figure})" for v in results)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Measure, print the report, write the markdown; 1 on a target missed under --check, 2 on a bad input."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("archives", type=Path, nargs="+", help="docker-save archives or directories of them")
    parser.add_argument("--base", type=Path, help="the base image's archive (python-3.11-slim.tar)")
    parser.add_argument("--markdown", type=Path, help="also write the report as markdown to this file")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed or not measured")
    args = parser.parse_args(argv)
    images: list[Image] = []
    seen: dict[str, Layer] = {}
    try:
        paths, ignored = collect(args.archives)
        for path in paths:  # refuse a bad input before the long part
            read_manifest(path)
        base = (
            None if args.base is None else frozenset(d for e in read_manifest(args.base) for d in e.diff_ids)
        )
        if ignored:
            print(f"images_report: ignored, not *.tar: {', '.join(p.name for p in ignored)}", file=sys.stderr)
        for path in paths:
            print(f"images_report: measuring {path} ({mb(path.stat().st_size)})", file=sys.stderr, flush=True)
            images += measure(path, seen)
    except ArchiveError as exc:
        print(f"images_report: {exc}", file=sys.stderr)
        return 2
    results, table = verdicts(images), rows(images, base)
    base_text = (
        "none given (--base)" if args.base is None else f"{args.base.name}, diff ids: {len(base or ())}"
    )
    print(text_report(table, results, base_text))
    if args.markdown is not None:
        args.markdown.write_text(markdown_report(table, results, base_text))
    missed = [v for v in results if v.met is not True]
    for verdict in missed if args.check else []:
        print(f"images_report: target {verdict.status}: {verdict.target} ({verdict.figure})", file=sys.stderr)
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
