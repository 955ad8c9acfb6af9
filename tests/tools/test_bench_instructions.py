"""The instruction-count bench: its path answers every window as serve does, and its profile is read right."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from bench_instructions import LOADS, Load, parse_annotate, run_path, windows_for
from vibration_core.features import extract_features
from vibration_infer.serve import batcher

if TYPE_CHECKING:
    from pathlib import Path

ANNOTATE = """\
--------------------------------------------------------------------------------
385,685,405 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                    file:function
--------------------------------------------------------------------------------
145,289,965 (56.54%)  /tmp/Python-3.11.7/Objects/call.c:PyObject_Vectorcall [/usr/lib/libpython3.11.so.1.0]
 44,238,404 (17.22%)  ???:(anonymous namespace)::r2c(pybind11::array const&, pybind11::object const&, bool, \
int, pybind11::object&, unsigned long) [/venv/site-packages/scipy/fft/_pocketfft/pypocketfft.cpython-311.so]
 43,502,980 (16.93%)  ???:void pocketfft::detail::r2c<float>(std::vector<unsigned long> const&) \
[/venv/site-packages/scipy/fft/_pocketfft/pypocketfft.cpython-311.so]
 13,483,000 ( 3.50%)  /project/src/_xxhash.c:xxh3_64_intdigest [/venv/site-packages/xxhash/_xxhash.so]
 13,291,000 ( 3.45%)  /project/deps/xxhash/xxh_x86dispatch.c:XXH3_64bits_withSeed_dispatch [/venv/_xxhash.so]
 12,802,442 ( 3.32%)  /project/simdjson/csimdjson.cpp:__pyx_pw_9csimdjson_6Parser_5parse(_object*, _object* \
const*, long, _object*) [/venv/site-packages/csimdjson.abi3.so]
 12,794,392 ( 3.32%)  /project/simdjson/csimdjson.cpp:__pyx_pf_9csimdjson_6Parser_4parse(\
__pyx_obj_9csimdjson_Parser*, _object*, int) [/venv/site-packages/csimdjson.abi3.so]
"""


def test_the_profile_gives_the_total_and_the_ffts_dedupe_keys_and_json_parses_inclusive_counts() -> None:
    counts = {"total": 385_685_405, "fft": 44_238_404, "key": 13_483_000, "json": 12_802_442}
    assert parse_annotate(ANNOTATE) == counts


def test_a_profile_without_those_functions_counts_them_as_none() -> None:
    counts = {"total": 1000, "fft": 0, "key": 0, "json": 0}
    assert parse_annotate("1,000 (100.0%)  PROGRAM TOTALS\n") == counts


@pytest.mark.slow  # nine runs of serve's path over hundreds of windows, and a model trained first
@pytest.mark.parametrize("load", LOADS, ids=[load.label for load in LOADS])
@pytest.mark.parametrize("part", ["", "features", "model"])
def test_the_path_answers_and_settles_every_measured_window(
    model_dir: Path, tmp_path: Path, load: Load, part: str
) -> None:
    windows = windows_for(load)
    assert all(payload.startswith(b"{") == load.json for _, _, payload in windows)
    run = run_path(model_dir, windows, load, part, tmp_path)
    assert run.windows == len(windows) - load.warm_reads * load.per_read
    assert run.predicted == run.windows  # serve's own count: a broken replacement is an error answer
    assert run.errors == 0
    assert run.unsettled == 0  # every answer's PUBACK came back
    assert run.complete
    # The replacement is undone: serve's batcher extracts features itself again.
    assert vars(batcher)["extract_features"] is extract_features
