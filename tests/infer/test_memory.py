"""MemoryTrimmer: freed heap memory goes back to the system, at most once per interval."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from vibration_infer.serve.memory import MemoryTrimmer

GLIBC = sys.platform == "linux" and MemoryTrimmer(1.0).active


def test_an_interval_of_zero_turns_trimming_off() -> None:
    trimmer = MemoryTrimmer(0)
    assert not trimmer.active
    assert not trimmer.maybe_trim(now=1e9)
    assert trimmer.next_due == float("inf")


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's; other C libraries have none")
def test_it_trims_at_most_once_per_interval() -> None:
    trimmer = MemoryTrimmer(2.0)
    assert trimmer.maybe_trim(now=100.0)
    assert trimmer.next_due == 102.0
    assert not trimmer.maybe_trim(now=101.9)
    assert trimmer.maybe_trim(now=102.0)


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's; other C libraries have none")
def test_a_trim_returns_fragmented_free_memory_to_the_system() -> None:
    # What serve does to the heap under a flood: many 16 KB payloads, a few survivors between them.
    script = textwrap.dedent(
        """
        from vibration_infer.serve.memory import MemoryTrimmer

        def rss_mb():
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024

        trimmer = MemoryTrimmer(1.0)  # as serve does, before the load: free() keeps more, the trim returns it
        blocks = [bytes(16_384) + bytes([i % 256]) for i in range(12_000)]
        survivors = blocks[::50]
        del blocks
        before = rss_mb()
        trimmer.maybe_trim()
        print(before, rss_mb(), len(survivors))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    before, after, _ = (float(x) for x in out.split())
    assert before - after > 100, f"RSS {before:.0f} MB before the trim, {after:.0f} MB after"


_BATCHES = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from vibration_core.features import extract_features
    from vibration_core.raw import decode_raw, encode_raw_float32
    from vibration_infer.serve.memory import MemoryTrimmer

    trimmer = MemoryTrimmer(float(sys.argv[1]))
    rng = np.random.default_rng(0)
    payloads = [encode_raw_float32(rng.normal(size=4096).astype(np.float32), 25600, 1) for _ in range(64)]

    def batch():
        windows = [decode_raw(bytes(p), "m") for p in payloads]
        extract_features(np.stack([w.samples for w in windows]), 25600.0)

    for _ in range(20):
        batch()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(100):
        batch()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 100)
    """
)


@pytest.mark.skipif(not GLIBC, reason="mallopt and malloc_trim are glibc's; other C libraries have none")
def test_an_active_trimmer_stops_batches_faulting_their_memory_in_again() -> None:
    # Serve's work in a flood: 64 payloads decoded, stacked and their features extracted, again and again.
    def faults_per_batch(interval_s: str) -> float:
        run = subprocess.run(
            [sys.executable, "-c", _BATCHES, interval_s], capture_output=True, text=True, check=True
        )
        return float(run.stdout)

    with_trimmer, without = faults_per_batch("1.0"), faults_per_batch("0")
    assert with_trimmer < 20, (
        f"{with_trimmer:.0f} page faults a batch with the trimmer ({without:.0f} without)"
    )
    assert without > 4 * with_trimmer + 50, (
        f"without the trimmer {without:.0f} a batch, with it {with_trimmer:.0f}"
    )
