"""Issue 6, item 2: how close a bayeslm KL-RL training step comes to the machine's matrix-multiply peak, in fp32
and under `precision: bf16` (bf16 autocast).

    .venv/bin/python bench/hardware.py [--steps 2] [--prompts 16] [--samples 4] [--max-new-tokens 32]
                                       [--modes lora,full] [--precisions fp32,bf16] [--profile]

1. Peak: torch.matmul of square matrices and of the model's own shapes, fp32 and bf16, with B stored [k, n] ("nn")
   or [n, k] and transposed ("nt", nn.Linear's layout), GFLOP/s; a dtype's peak is its best case.
2. Steps: a KL-RL step (analytic KL, leave-one-out baseline; generation, prior scoring, model and prior forward,
   backward, AdamW) on SmolLM2-135M, LoRA r=8 and full fine-tuning, fp32 and bf16. Sampling never stops at
   EOS, so every step does the same work; its FLOPs (every matrix product and attention, forward and backward,
   as executed, padding included) are counted once with torch's FlopCounterMode. Each step is reported as a
   fraction of each peak and as a multiple of the FLOP floor (FLOPs / peak).
3. With --profile: torch.profiler's busiest operators of one step in each precision, to say where time goes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import torch  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def rate(fn, flops: float, seconds: float) -> float:
    """GFLOP/s of fn, repeated for about `seconds` after one warm-up call."""
    fn()
    count, started = 0, time.perf_counter()
    while True:
        fn()
        count += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return flops * count / elapsed / 1e9


def matmul_peaks(sizes: list[int], seconds: float) -> dict:
    """GFLOP/s of torch.matmul per dtype and shape; the peak of a dtype is its best shape."""
    hidden, inter, vocab = 576, 1536, 49152  # SmolLM2-135M
    shapes = [(n, n, n) for n in sizes] + [
        (4096, hidden, inter),  # an MLP projection over a scoring batch (64 rows × 64 tokens)
        (64, hidden, inter),  # the same while decoding one token for 64 rows
        (64, hidden, vocab),  # the output head while decoding
    ]
    out = {}
    for name, dtype in DTYPES.items():
        out[name] = {}
        for m, k, n in shapes:
            # Two layouts: B stored [k, n], and B stored [n, k] used transposed, as nn.Linear keeps its weight.
            # Without a native bf16 unit the two take very different kernels (see docs/performance.md).
            a, b, w = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype), torch.randn(n, k, dtype=dtype)
            for layout, fn in (("nn", lambda: torch.matmul(a, b)), ("nt", lambda: torch.matmul(a, w.t()))):
                key = f"{m}x{k}x{n} {layout}"
                out[name][key] = rate(fn, 2.0 * m * k * n, seconds)
                print(f"matmul {name:4s} {m:5d}×{k:5d}×{n:5d} {layout}: {out[name][key]:8.1f} GFLOP/s", flush=True)
    # What bf16 autocast actually runs: fp32 tensors cast to bf16 on every call, then the bf16 product.
    m, k, n = 4096, hidden, inter
    a, b = torch.randn(m, k), torch.randn(n, k)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out["bf16_autocast_linear"] = rate(lambda: torch.nn.functional.linear(a, b), 2.0 * m * k * n, seconds)
    print(f"F.linear under bf16 autocast (fp32 in) {m}×{k}×{n}: {out['bf16_autocast_linear']:8.1f} GFLOP/s")
    out["peak"] = {name: max(out[name].values()) for name in DTYPES}
    return out


def step_figures(args, mode: str, precision: str, peaks: dict) -> dict:
    trainer = common.klrl_trainer(lora=mode == "lora", precision=precision, n_prompts=args.prompts,
                                  samples_per_prompt=args.samples, max_new_tokens=args.max_new_tokens,
                                  batch_size=args.prompts * args.samples, fixed_length=True)
    print(f"\n## {mode}, {precision}: {args.prompts} prompts × {args.samples} samples × {args.max_new_tokens} "
          f"tokens, {args.warmup} warm-up + {args.steps} timed steps", flush=True)
    prompts = trainer._prompts(0)
    gen_flops = common.count_flops(lambda: trainer.model.sample(prompts, args.samples, args.max_new_tokens, seed=0))
    step_flops = common.count_flops(trainer.step)  # also the first warm-up step
    for _ in range(args.warmup - 1):
        trainer.step()
    records = [trainer.step() for _ in range(args.steps)]
    seconds = [r["step_seconds"] for r in records]
    sampling = [r["sample_seconds"] for r in records]
    t = common.median(seconds)
    row = {"mode": mode, "precision": precision, "step_seconds": seconds, "sample_seconds": sampling,
           "flops": step_flops, "generation_flops": gen_flops, "samples_per_s": [r["samples_per_s"] for r in records],
           "achieved_gflops": step_flops / t / 1e9}
    for name, peak in peaks.items():
        row[f"fraction_of_{name}_peak"] = step_flops / t / 1e9 / peak
        row[f"times_{name}_floor"] = t / (step_flops / 1e9 / peak)
    print(f"step {common.spread(seconds)}, of which sampling (generation + scoring) {common.median(sampling):.2f} s; "
          f"{row['samples_per_s'][-1]:.2f} samples/s")
    print(f"FLOPs per step {step_flops / 1e12:.3f} T (generation {gen_flops / 1e12:.3f} T); achieved "
          f"{row['achieved_gflops']:.1f} GFLOP/s = {100 * row['fraction_of_fp32_peak']:.1f}% of the fp32 peak, "
          f"{100 * row['fraction_of_bf16_peak']:.1f}% of the bf16 peak; step = "
          f"{row['times_fp32_floor']:.1f}× the fp32 floor, {row['times_bf16_floor']:.1f}× the bf16 floor", flush=True)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            trainer.step()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_rows)
        print(table)
        row["profile"] = table
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (the first is FLOP-counted)")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--modes", default="lora,full")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--sizes", default="512,1024", help="square matmul sizes for the peak")
    parser.add_argument("--seconds", type=float, default=1.5, help="seconds per matmul measurement")
    parser.add_argument("--profile", action="store_true", help="profile one more step per configuration")
    parser.add_argument("--profile-rows", type=int, default=18)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    common.print_machine()
    print("\n## matrix-multiply peak (torch.matmul)")
    peaks = matmul_peaks([int(s) for s in args.sizes.split(",")], args.seconds)
    print(f"peak: fp32 {peaks['peak']['fp32']:.1f} GFLOP/s, bf16 {peaks['peak']['bf16']:.1f} GFLOP/s "
          f"(bf16/fp32 = {peaks['peak']['bf16'] / peaks['peak']['fp32']:.2f}×)", flush=True)
    rows = []
    for mode in filter(None, args.modes.split(",")):
        for precision in args.precisions.split(","):
            rows.append(step_figures(args, mode, precision, peaks["peak"]))
    print("\n## summary")
    print(f"{'mode':5s} {'prec':5s} {'step s':>8s} {'samples/s':>9s} {'TFLOP':>7s} {'GFLOP/s':>8s} "
          f"{'%fp32pk':>8s} {'%bf16pk':>8s} {'×bf16 floor':>11s}")
    for r in rows:
        print(f"{r['mode']:5s} {r['precision']:5s} {common.median(r['step_seconds']):8.2f} "
              f"{common.median(r['samples_per_s']):9.2f} {r['flops'] / 1e12:7.3f} {r['achieved_gflops']:8.1f} "
              f"{100 * r['fraction_of_fp32_peak']:7.1f}% {100 * r['fraction_of_bf16_peak']:7.1f}% "
              f"{r['times_bf16_floor']:11.1f}")
    for mode in filter(None, args.modes.split(",")):
        by = {r["precision"]: common.median(r["step_seconds"]) for r in rows if r["mode"] == mode}
        if "fp32" in by and "bf16" in by:
            print(f"{mode}: bf16 step / fp32 step = {by['bf16'] / by['fp32']:.2f}×")
    common.emit_json(args.json, {"config": vars(args), "machine": common.machine(), "matmul": peaks, "steps": rows})


if __name__ == "__main__":
    main()
