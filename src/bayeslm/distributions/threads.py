"""How many CPU threads torch uses for this process's models, chosen once a model is loaded, and said.

torch starts with a thread per core. That is a poor choice in two common cases:
- Small models (toy priors, small classifiers): each matrix multiply is too small to share, and the threads'
  synchronisation is the cost. One thread is as fast on idle cores.
- Cores that other work keeps busy: threads that wait for a core stall each other at every synchronisation. With
  2 threads on 2 busy cores a toy run took 13× longer than with 1.

So: one thread below SMALL parameters; otherwise one per core this process may use. The count is never lowered
for a busy machine on its own, since the rounding of every sum depends on it and a resumed run must compute bit for
bit as the run it continues; when the load average says cores are busy, the message says so and how to choose.
OMP_NUM_THREADS is the user's choice and is kept; from Python, `torch.set_num_threads` after the models are loaded
also wins.
"""

from __future__ import annotations

import math
import os

import torch

from bayeslm import progress

SMALL = 20_000_000  # parameters below which one thread is fastest
_chosen: int | None = None  # what `choose` set; None until then


def choose(parameters: int) -> int:
    """Sets (and returns) the thread count for a model of `parameters` on the CPU; a larger model loaded later
    may raise it, never lower it. Says so on stderr unless --quiet."""
    global _chosen
    if "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    if parameters < SMALL:
        wanted, why = 1, f"a model of {parameters / 1e6:.2g} M parameters is too small to share"
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        busy = math.floor(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
        wanted, why = cores, f"{cores} core(s)"
        if busy:
            why += (f"; the load average says {busy} are busy: if other work keeps them so, "
                    f"OMP_NUM_THREADS={max(1, cores - busy)} will run faster")
    if _chosen is not None and wanted <= _chosen:
        return _chosen
    _chosen = wanted
    torch.set_num_threads(wanted)
    progress.say(f"{wanted} CPU thread(s): {why} (set OMP_NUM_THREADS to choose)")
    return wanted
