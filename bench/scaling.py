"""Issue 6, item 4: samples/s and peak memory of a KL-RL step as the batch and the completion length double, and
the peak memory of a LoRA step against inference (sampling + scoring) of the same batch.

    .venv/bin/python bench/scaling.py [--samples 64,128,256,512] [--tokens 32,64,128] [--steps 1]
                                      [--modes lora,inference]

Each point runs in a fresh process (peak resident memory is per process): the embedded SmolLM2-135M prior,
16 prompts × (samples/16) samples, exactly `tokens` new tokens per sample (EOS does not stop sampling, so the
work is the same at every step), rows per forward pass 64 (the library's default `batch_size`);
`--batch-sizes` are the training's `backward_batch_size` (rows back-propagated at once: the memory knob);
`--heap release,keep` runs each training point with and without `bayeslm.training.heap.release` between backward slices.
  lora       one warm-up KL-RL step (analytic KL, LoRA r = 8), then `--steps` timed steps
  full       the same with full fine-tuning
  inference  `sample` then `log_prob` under the prior of the same batch (what a LoRA step does besides the
             model's own forward, backward and update), warm-up then timed
Peak memory is the process's peak resident set (ru_maxrss), model and Python included; "above load" subtracts
the resident set right after the model loaded.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def point(args):
    """One (mode, samples, tokens) point in this process; prints one JSON line."""
    import torch

    n_prompts = 16
    per_prompt = args.point_samples // n_prompts
    T = args.point_tokens
    if args.point_mode == "inference":
        from bayeslm.distributions.loading import load_lm

        lm = load_lm("default", batch_size=64)
        lm.eos_ids = torch.tensor([-1])
        loaded = common.rss_mib()
        prompts = (common.PROMPTS * n_prompts)[:n_prompts]

        def step():
            samples = lm.sample(prompts, per_prompt, T, seed=0)
            with torch.no_grad():
                lm.log_prob(samples.sample_prompts, samples.continuations)
    else:
        if args.point_heap == "keep":
            from bayeslm.training import heap

            heap.release = lambda device: False
        trainer = common.klrl_trainer(lora=args.point_mode == "lora", n_prompts=n_prompts,
                                      samples_per_prompt=per_prompt, max_new_tokens=T, batch_size=64,
                                      backward_batch_size=args.point_batch_size, fixed_length=True,
                                      gradient_checkpointing=args.gradient_checkpointing)
        loaded = common.rss_mib()
        step = trainer.step
    step()
    times = [common.timed(step) for _ in range(args.steps)]
    print("RESULT " + json.dumps({"mode": args.point_mode, "samples": args.point_samples, "tokens": T,
                                  "batch_size": args.point_batch_size if args.point_mode != "inference" else 64,
                                  "gradient_checkpointing": args.gradient_checkpointing, "heap": args.point_heap,
                                  "step_seconds": times, "samples_per_s": args.point_samples / common.median(times),
                                  "peak_rss_mib": common.peak_rss_mib(), "loaded_rss_mib": loaded}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", default="64,128,256,512", help="samples per step (multiples of 16)")
    parser.add_argument("--tokens", default="32,64,128", help="new tokens per sample")
    parser.add_argument("--modes", default="lora,inference")
    parser.add_argument("--batch-sizes", default="64", help="training's backward_batch_size values (each a point)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="train with gradient_checkpointing")
    parser.add_argument("--heap", default="release",
                        help="training points with freed heap pages released between backward slices (release, "
                             "the library's behaviour) and/or kept (keep)")
    parser.add_argument("--steps", type=int, default=1, help="timed steps per point, after one warm-up")
    parser.add_argument("--grid", choices=("cross", "full"), default="cross",
                        help="cross: every batch size at the first length and every length at the first batch size; "
                             "full: every combination")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--point-mode", help=argparse.SUPPRESS)
    parser.add_argument("--point-samples", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--point-tokens", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--point-batch-size", type=int, default=64, help=argparse.SUPPRESS)
    parser.add_argument("--point-heap", default="release", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.point_mode:
        return point(args)
    common.print_machine()
    sizes = [int(s) for s in args.samples.split(",")]
    lengths = [int(t) for t in args.tokens.split(",")]
    grid = [(s, t) for s in sizes for t in lengths]
    if args.grid == "cross":
        grid = [(s, lengths[0]) for s in sizes] + [(sizes[0], t) for t in lengths[1:]]
    rows = []
    print(f"{'mode':9s} {'rows':>4s} {'samples':>7s} {'tokens':>6s} {'step s':>8s} {'samples/s':>9s} {'peak MiB':>9s} "
          f"{'above load':>10s}")
    runs = [(mode, b, h) for mode in args.modes.split(",")
            for b in ([64] if mode == "inference" else [int(b) for b in args.batch_sizes.split(",")])
            for h in (["release"] if mode == "inference" else args.heap.split(","))]
    for s, t in grid:
        for mode, b, h in runs:
            label = mode if h == "release" else f"{mode}/{h}"
            cmd = [sys.executable, __file__, "--point-mode", mode, "--point-samples", str(s), "--point-tokens", str(t),
                   "--point-batch-size", str(b), "--point-heap", h, "--steps", str(args.steps)] + (
                ["--gradient-checkpointing"] if args.gradient_checkpointing else [])
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                sys.stderr.write(proc.stderr[-4000:])
                print(f"{label:9s} {b:4d} {s:7d} {t:6d} failed (exit {proc.returncode})", flush=True)
                continue
            r = json.loads(lines[-1][len("RESULT "):])
            rows.append(r)
            print(f"{label:9s} {b:4d} {s:7d} {t:6d} {common.median(r['step_seconds']):8.2f} {r['samples_per_s']:9.2f} "
                  f"{r['peak_rss_mib']:9.0f} {r['peak_rss_mib'] - r['loaded_rss_mib']:10.0f}", flush=True)
    print("\n## peak memory of a training step ÷ inference of the same batch")
    for s, t in grid:
        base = next((r for r in rows if r["mode"] == "inference" and r["samples"] == s and r["tokens"] == t), None)
        for r in rows:
            if base and r["mode"] != "inference" and r["samples"] == s and r["tokens"] == t:
                label = r["mode"] if r.get("heap", "release") == "release" else f"{r['mode']}/{r['heap']}"
                print(f"{label:9s} {r['batch_size']:3d} rows at once, {s:4d} samples × {t:3d} tokens: "
                      f"{r['peak_rss_mib'] / base['peak_rss_mib']:.2f}× ({r['peak_rss_mib']:.0f} / "
                      f"{base['peak_rss_mib']:.0f} MiB), {r['samples_per_s']:.2f} vs inference "
                      f"{base['samples_per_s']:.2f} samples/s")
    common.emit_json(args.json, {"config": vars(args), "machine": common.machine(), "points": rows})


if __name__ == "__main__":
    main()
