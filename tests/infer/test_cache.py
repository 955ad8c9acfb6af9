"""The node cache: what eviction must keep (a deferred candidate, the newest), and each version's card."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import onnx

from vibration_core.modelcard import CARD_FILENAME, ModelCard
from vibration_core.validation import ExitCode
from vibration_infer.cache import ModelCache
from vibration_infer.validate import run_validation
from vibration_testkit.cards import MODEL_ID, TinyModel, card_with, for_artifact
from vibration_testkit.tiny_models import publish

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from vibration_infer.cache import CachedModel
    from vibration_infer.settings import ValidateSettings

    MakeSettings = Callable[..., ValidateSettings]


def relabelled(model: TinyModel, version: str) -> TinyModel:
    """The same trees under other bytes (another doc string): a model of its own digest that passes too."""
    graph = onnx.load_from_string(model.data)
    graph.doc_string = f"spindle {version}"
    data = graph.SerializeToString()
    return TinyModel(data, for_artifact(model.card, data, version=version))


def stored(cache: ModelCache, model: TinyModel, version: str) -> CachedModel:
    """An entry of `version` (bytes of its own, never loaded) stored as a download would store it."""
    data = f"artifact {version}".encode()
    card = for_artifact(model.card, data, version=version)
    with cache.staging() as staged:
        (staged / card.artifact.filename).write_bytes(data)
        card.save(staged / CARD_FILENAME)
        return cache.store(staged, card)


def test_a_candidate_waiting_for_its_shadow_run_outlives_another_namespaces_eviction(
    onnx_model: TinyModel, tmp_path: Path, make_settings: MakeSettings
) -> None:
    """Hall A shadows v2 while hall B, on the same gateway, rolls out v3 of the same model id."""
    cache = ModelCache(tmp_path / "cache", keep=1)
    v1, v2, v3 = (relabelled(onnx_model, v) for v in ("v1", "v2", "v3"))

    def settings(model: TinyModel, slot: str, champion: str | None = None) -> ValidateSettings:
        return make_settings(
            model_uri=publish(tmp_path / "registry", model).as_uri(),
            expected_sha256=model.card.artifact.sha256,
            champion_sha256=champion,
            slot=slot,
            cache_keep=1,
        )

    assert run_validation(settings(v1, "hall-a/spindle"), cache=cache).code is ExitCode.PASSED
    time.sleep(0.01)  # distinct mtimes order the entries
    candidate = run_validation(
        settings(v2, "hall-a/spindle", v1.card.artifact.sha256), cache=cache, defer_promotion=True
    )
    assert candidate.code is ExitCode.PASSED
    assert candidate.promote_later is not None
    time.sleep(0.01)
    assert run_validation(settings(v3, "hall-b/spindle"), cache=cache).code is ExitCode.PASSED
    assert cache.find(v2.card.artifact.sha256) is not None  # pinned: not evicted by hall B's run

    candidate.promote_later()  # the shadow run passed
    assert candidate.unpin is not None
    candidate.unpin()
    good = cache.last_good_of_slot("hall-a/spindle")
    assert good is not None
    assert (good.version, good.sha256) == ("v2", v2.card.artifact.sha256)


def test_a_released_or_dead_pin_keeps_nothing(onnx_model: TinyModel, tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "cache", keep=0)
    released, unpinned = stored(cache, onnx_model, "v1"), stored(cache, onnx_model, "v2")
    pin = cache.pin(released)
    assert cache.evict(MODEL_ID) == [unpinned.sha256]
    pin.release()
    pin.release()  # twice does nothing
    # A pod killed mid-shadow: its process held the pin, and the kernel drops it with the process.
    dead = stored(cache, onnx_model, "v3")
    script = (
        "import os, sys; from pathlib import Path; from vibration_infer.cache import ModelCache; "
        "c = ModelCache(Path(sys.argv[1])); c.pin(c.find(sys.argv[2], verify=False)); os._exit(9)"
    )
    done = subprocess.run([sys.executable, "-c", script, str(cache.root), dead.sha256], check=False)
    assert done.returncode == 9  # the script's own exit code
    assert sorted(cache.evict(MODEL_ID)) == sorted([released.sha256, dead.sha256])
    assert _entries(cache) == []


def test_entries_with_future_mtimes_do_not_outrank_the_newest(onnx_model: TinyModel, tmp_path: Path) -> None:
    """A gateway whose clock ran a day ahead before NTP set it right left entries dated tomorrow."""
    cache = ModelCache(tmp_path / "cache", keep=1)
    tomorrow = time.time() + 86400
    for version in ("v1", "v2"):
        os.utime(stored(cache, onnx_model, version).artifact.parent, (tomorrow, tomorrow))
    newest = stored(cache, onnx_model, "v3")
    cache.evict(MODEL_ID)
    assert _entries(cache) == [newest.sha256]


def _entries(cache: ModelCache) -> list[str]:
    return sorted(d.name for d in (cache.root / MODEL_ID).iterdir() if d.is_dir())


def test_a_new_staging_removes_the_leftovers_of_killed_downloads_only(tmp_path: Path) -> None:
    """A power loss or a SIGKILL mid-download skips the staging's own removal: the next one sweeps."""
    cache = ModelCache(tmp_path / "cache")
    staging = cache.root / ".staging"
    killed, fresh, live = (staging / name for name in ("killed", "fresh", "live"))
    for directory in (killed, fresh, live):
        directory.mkdir(parents=True)
        (directory / ".model.onnx.part").write_bytes(b"half a model")
    (staging / "older-release").mkdir()  # no lock, unchanged for 10 min: a slow download it still writes
    ten_minutes_ago = time.time() - 600
    os.utime(staging / "older-release", (ten_minutes_ago, ten_minutes_ago))
    a_while_ago = time.time() - 25 * 3600  # older than any download a pod of an older release still runs
    for path in (killed, killed / ".model.onnx.part", live, live / ".model.onnx.part"):
        os.utime(path, (a_while_ago, a_while_ago))
    held = os.open(live, os.O_RDONLY)  # another pod's download, slow but alive
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        with cache.staging() as mine:
            assert sorted(p.name for p in staging.iterdir()) == sorted(
                ["fresh", "live", "older-release", mine.name]
            )
    finally:
        os.close(held)
    assert sorted(p.name for p in staging.iterdir()) == ["fresh", "live", "older-release"]


def test_each_card_that_passed_with_one_artifact_is_kept_and_each_record_reads_its_own(
    onnx_model: TinyModel, tmp_path: Path
) -> None:
    """Production passed v3; staging passes the same bytes as v3-r2, then as v3 with a mended card.

    Production's record must still read the card it passed under, and a later offline
    validation of each version finds its own card in the cache: a slot's own first.
    """
    cache = ModelCache(tmp_path / "cache")
    entry = stored(cache, onnx_model, "v3")
    v3 = entry.card()
    cache.mark_good(entry, v3, slot="production/spindle")
    retried = card_with(v3, {"version": "v3-r2"})
    retry = cache.mark_good(entry, retried, slot="staging/spindle")
    mended = card_with(v3, {"framework": "mended"})  # the same version, another card
    cache.mark_good(entry, mended, slot="staging/spindle")

    production = cache.last_good_of_slot("production/spindle")
    assert production is not None
    assert (production.version, ModelCard.load(production.card)) == ("v3", v3)
    assert (retry.version, ModelCard.load(retry.card)) == ("v3-r2", retried)
    assert entry.card() == v3  # the card the bytes came with, never rewritten
    assert retry.card.name.startswith(".card-v3-r2-")  # hidden: never an artifact's name
    assert cache.card_of(entry, None) == v3
    assert cache.card_of(entry, "v3", "production/spindle") == v3
    assert cache.card_of(entry, "v3", "staging/spindle") == mended
    assert cache.card_of(entry, "v3-r2", "production/spindle") == retried  # passed here, in another slot
    assert cache.card_of(entry, "v3-r3") is None  # never passed here: the registry must say
    # A kept file that names another version, or is not a card, is not taken; nor is a glob.
    entry.kept_card_path(retried).with_name(".card-v3-r4-0.json").write_text(retried.to_json())
    entry.kept_card_path(retried).with_name(".card-v3-r5-0.json").write_text("{")
    assert (cache.card_of(entry, "v3-r4"), cache.card_of(entry, "v3-r5"), cache.card_of(entry, "*")) == (
        None,
        None,
        None,
    )
