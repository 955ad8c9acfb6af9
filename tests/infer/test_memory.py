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

        blocks = [bytes(16_384) + bytes([i % 256]) for i in range(12_000)]
        survivors = blocks[::50]
        del blocks
        before = rss_mb()
        MemoryTrimmer(1.0).maybe_trim()
        print(before, rss_mb(), len(survivors))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    before, after, _ = (float(x) for x in out.split())
    assert before - after > 100, f"RSS {before:.0f} MB before the trim, {after:.0f} MB after"
