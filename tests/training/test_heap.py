"""Freed CPU memory goes back to the system (`bayeslm.training.heap`), so that slices of a backward pass do not pile
up."""

from pathlib import Path

import pytest
import torch

from bayeslm.training import heap


def resident_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


@pytest.mark.skipif(heap._malloc_trim() is None or not Path("/proc/self/status").exists(),
                    reason="needs glibc and /proc")
def test_release_returns_freed_heap_pages_to_the_system():
    # 100 KB blocks sit below glibc's mmap threshold, so they come from the heap; the last one, kept alive, pins
    # the heap's top, so nothing but malloc_trim can hand the freed pages back
    blocks = [torch.ones(25_000) for _ in range(3000)]  # ≈ 290 MiB
    kept = blocks[-1]
    del blocks
    held = resident_mib()
    assert heap.release(torch.device("cpu"))
    assert resident_mib() < held - 200
    assert kept.sum() == 25_000


def test_release_leaves_other_devices_alone():
    assert not heap.release(torch.device("meta"))
