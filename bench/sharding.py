"""Memory per process of sharded training (`sharding: full`) against plain data parallelism, side by side.

Two CPU processes (gloo) train KL-RL with full fine-tuning on the embedded SmolLM2-135M prior, once with every
process holding the whole model and once sharded. Each process reports, exactly from its tensors, the bytes of
what training keeps (π_θ's weights, its gradients, AdamW's two moments, the frozen prior's weights) and its
resident memory: the peak during two training steps, measured from a reset after the models were built.

Resident memory depends on the C allocator: glibc keeps freed heap memory for reuse, and the buffers sharding
gathers and frees layer by layer stay resident. Both pairs run twice, with glibc's defaults and with
MALLOC_MMAP_THRESHOLD_=65536 (every buffer above 64 KiB its own mapping, returned to the system when freed).
On a GPU, PyTorch's caching allocator does this job instead.

    .venv/bin/python bench/sharding.py [--json bench/results/sharding.json]
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def _status(key: str) -> float:
    """A /proc/self/status figure in MiB (VmRSS: resident now, VmHWM: its peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _local_bytes(tensors) -> int:
    from torch.distributed.tensor import DTensor

    return sum((t.to_local() if isinstance(t, DTensor) else t).nelement() * t.element_size() for t in tensors)


def worker(sharding: str, out: str):
    from bayeslm.parallel import distributed

    world = distributed.init()
    target = common.sentiment_target(2, 16, 64)
    # The prior as loaded from the GGUF file is not all resident (RSS after loading is below its size), and
    # sharding it left RSS where it was; a copy in ordinary memory makes RSS follow the tensors.
    target.prior.model = copy.deepcopy(target.prior.model)
    trainer = common.klrl_trainer(lora=False, n_prompts=2, samples_per_prompt=2, max_new_tokens=16, grad_accum=2,
                                  sharding=sharding, world=world, target=target)
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed memory (the unsharded weights) back to the system
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS: the peak from here on
    start = _status("VmRSS")
    for _ in range(2):
        trainer.step()
    params = list(trainer.model.model.parameters())
    moments = [v for state in trainer.optimizer.state.values() for k, v in state.items() if k != "step"]
    prior = list(trainer.target.prior.model.parameters())
    figures = {"rank": world.rank, "weights": _local_bytes(params), "gradients": _local_bytes(trainer.params),
               "adam": _local_bytes(moments), "prior": _local_bytes(prior), "rss_start_mib": start,
               "rss_peak_mib": _status("VmHWM")}
    all_figures = world.gather([figures])
    if world.main:
        Path(out).write_text(json.dumps(all_figures))
    distributed.close(world)


def run(sharding: str, allocator: dict) -> list[dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tempfile.mktemp(suffix=".json")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **allocator}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                    "127.0.0.1", "--master_port", str(port), __file__, "--worker", sharding, "--out", out],
                   env=env, check=True)
    return json.loads(Path(out).read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json")
    parser.add_argument("--worker", choices=["none", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.out)
    common.print_machine()
    print("# 2 CPU processes (gloo, 1 thread each), KL-RL full fine-tuning of SmolLM2-135M, fp32, 2 steps of "
          "2 micro-batches × 2 prompts × 2 samples × ≤ 16 tokens")
    allocators = {"glibc defaults": {}, "MALLOC_MMAP_THRESHOLD_=65536": {"MALLOC_MMAP_THRESHOLD_": "65536"}}
    results = {name: {sharding: run(sharding, env) for sharding in ("none", "full")}
               for name, env in allocators.items()}
    mib = 2**20
    first = results["glibc defaults"]
    print(f"{'per process (rank 0)':40s} {'whole':>10s} {'sharded':>10s} {'ratio':>7s}")
    keys = [("weights", "π_θ weights"), ("gradients", "π_θ gradients"), ("adam", "AdamW moments"),
            ("prior", "prior weights")]
    for key, label in keys:
        a, b = first["none"][0][key] / mib, first["full"][0][key] / mib
        print(f"{label + ', MiB':40s} {a:10.1f} {b:10.1f} {b / a:7.3f}")
    a, b = (sum(first[s][0][k] for k, _ in keys) / mib for s in ("none", "full"))
    print(f"{'training state, MiB':40s} {a:10.1f} {b:10.1f} {b / a:7.3f}")
    for name, result in results.items():
        for key, label in (("rss_start_mib", "resident after set-up"), ("rss_peak_mib", "resident peak")):
            for rank in (0, 1):
                a, b = result["none"][rank][key], result["full"][rank][key]
                print(f"{f'{label} (rank {rank}), MiB':40s} {a:10.1f} {b:10.1f} {b / a:7.3f}   {name}")
    common.emit_json(args.json, {"machine": common.machine(), "results": results})


if __name__ == "__main__":
    main()
