"""Handing freed CPU memory back to the operating system between backward slices.

On the CPU, torch takes tensors from the C library's malloc. glibc keeps the pages of freed medium-sized blocks in
the process and reuses them only where a later request fits; back-propagating a batch a slice at a time
(`backward_batch_size`) frees and requests blocks of slightly different sizes each slice, so the heap fragments
and the resident set grows well beyond the live tensors. `malloc_trim` returns the free pages (the addresses
stay reserved), which on SmolLM2 took a LoRA step's peak from 1.35× to 1.18× that of inference of the same batch
at no measurable cost (docs/performance.md, memory). CUDA memory has its own caching allocator and is left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import torch


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (macOS, musl)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release(device: torch.device) -> bool:
    """Returns freed heap pages to the system when `device` is the CPU; True when any were returned."""
    trim = _malloc_trim()
    return device.type == "cpu" and trim is not None and bool(trim(0))
