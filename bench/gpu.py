"""Issue 6 on a GPU: the benchmarks of this folder on CUDA, for SmolLM2-135M's architecture and a ~1.1B Llama,
both built from a config (nothing is downloaded; the weights are random, which changes no cost: every sample
runs to the length limit on both sides, as a random model almost never draws EOS).

    python bench/gpu.py [--models smollm2,1b] [--modes lora,full] [--precisions bf16,fp32] [--trl]
                        [--decodings eager,compiled]

1. Peak: bf16, tf32 and fp32 matrix products (8192³), TFLOP/s.
2. Agreement: each model samples 16 × 4 continuations and scores them again, per precision and decoding; the
   largest gap (nats per sequence) is the tolerance the sampler/scorer agreement holds to there.
3. Overhead: `LM.sample` (each decoding: eager, and compiled, whose first call compiles and is timed apart)
   against `model.generate` on the same rows (EOS off on both sides); `LM.log_prob` against a raw forward pass
   (logits_to_keep, log-softmax, gather).
4. Training: a KL-RL step (analytic KL, leave-one-out baseline; generation, prior scoring, model and prior
   forward, backward, AdamW), 16 prompts × 4 samples × 32 tokens, LoRA (r 8) and full fine-tuning, per
   precision and decoding: samples/s, tokens/s, FLOPs per step (FlopCounterMode, as executed, eagerly), the
   fraction of the bf16 peak, and peak GPU memory against inference (sampling and scoring) at the same batch.
5. With --trl: TRL's RLOOTrainer on the same GPU, model and batch (its default setting, and its best here: bf16,
   no gradient checkpointing), against bayeslm in bf16; see vs_trl.py for what both sides do.

`--assets DIR` holds the tokenizer and config.json of SmolLM2-135M-Instruct (default: the embedded prior's
cache, made by `make install`); copy that folder without model.safetensors to a GPU machine.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import torch  # noqa: E402

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
ONE_B = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
         "num_key_value_heads": 4, "head_dim": 64}  # ≈ 1.07 B parameters with SmolLM2's 49 152-token vocabulary


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> float:
    sync(device)
    seconds = common.timed(fn)
    sync(device)
    return seconds


def matmul_peaks(device, size: int, repeats: int) -> dict:
    """TFLOP/s of size³ products (CUDA events around `repeats` products after a warm-up): bf16, fp32 on tensor
    cores (tf32) and plain fp32."""
    out = {}
    for name, dtype, tf32 in (("bf16", torch.bfloat16, False), ("tf32", torch.float32, True),
                              ("fp32", torch.float32, False)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a, b = torch.randn(size, size, dtype=dtype, device=device), torch.randn(size, size, dtype=dtype, device=device)
        c = torch.empty(size, size, dtype=dtype, device=device)
        for _ in range(3):
            torch.mm(a, b, out=c)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            torch.mm(a, b, out=c)
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1e3
        out[name] = 2 * size**3 * repeats / seconds / 1e12
        print(f"matmul {name:4s} {size}³: {out[name]:7.1f} TFLOP/s ({repeats} products in {seconds * 1e3:.1f} ms)",
              flush=True)
    torch.backends.cuda.matmul.allow_tf32 = False  # what fp32 training uses: PyTorch's default
    return out


def build(assets: Path, name: str):
    """A random-weight model of SmolLM2-135M's architecture (or the ~1B variant) with its tokenizer, on the CPU."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(assets)
    if name == "1b":
        for key, value in ONE_B.items():
            setattr(config, key, value)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(assets)


def prior_lm(model, tokenizer, device, batch_size: int):
    from bayeslm.distributions.lm import LM

    lm = LM(copy.deepcopy(model).to(device), tokenizer, chat=True, batch_size=batch_size, name="prior")
    lm.eos_ids = torch.tensor([-1])  # never stop at EOS: every step does the same work
    return lm


def target_of(lm, args):
    from bayeslm.modelling.potentials import Exponential
    from bayeslm.modelling.rewards import sentiment

    return (lm * Exponential(sentiment(), beta=common.BETA)).given(common.PROMPTS[:args.prompts], args.max_new_tokens)


def agreement(lm, args) -> dict:
    out = {}
    for name, dtype in PRECISIONS.items():
        for decoding in args.decodings:
            view = lm.view(autocast=dtype, decoding=decoding)
            samples = view.sample(common.PROMPTS[:args.prompts], args.samples, args.max_new_tokens, seed=0)
            with torch.no_grad():
                gap = (view.log_prob(samples.sample_prompts, samples.continuations).cpu() - samples.log_prob).abs()
            out[f"{name} {decoding}"] = {"max_nats_per_sequence": gap.max().item(),
                                         "mean_nats_per_sequence": gap.mean().item()}
            print(f"sampler/scorer gap, {name}, {decoding} decoding: max {gap.max().item():.2e}, mean "
                  f"{gap.mean().item():.2e} nats per sequence of {args.max_new_tokens} tokens", flush=True)
    return out


def overhead(lm, args, device, precision: str) -> dict:
    """Medians of interleaved repeats: sample vs generate, log_prob vs a raw forward pass."""
    from bayeslm.distributions.tokens import pad, positions

    view, model, T = lm.view(autocast=PRECISIONS[precision]), lm.model, args.max_new_tokens
    prompts = common.PROMPTS[:args.prompts]
    rows = [ids for ids in lm.encode_prompts(prompts) for _ in range(args.samples)]
    ids, mask = (t.to(device) for t in pad(rows, lm.pad_id, "left"))
    autocast = torch.autocast(device.type, dtype=PRECISIONS[precision], enabled=precision != "fp32")
    samples = view.sample(prompts, args.samples, T, seed=0)
    full, full_mask = (t.to(device) for t in pad([p + c for p, c in zip(rows, samples.continuations)], lm.pad_id,
                                                 "left"))
    targets = torch.tensor(samples.continuations, device=device)

    def generate():
        with torch.no_grad(), autocast:
            model.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                           max_new_tokens=T, min_new_tokens=T, pad_token_id=lm.pad_id)

    def raw_scores():
        with torch.no_grad(), autocast:
            logits = model(input_ids=full, attention_mask=full_mask, position_ids=positions(full_mask),
                           logits_to_keep=T + 1).logits[:, :-1]
        return logits.float().log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1).sum(-1)

    def scores():
        with torch.no_grad():
            return view.log_prob(samples.sample_prompts, samples.continuations)

    fns = {"generate": generate, "log_prob": scores, "raw_forward": raw_scores}
    first = {}
    for decoding in args.decodings:
        decoder = view.view(decoding=decoding)
        fns[f"sample {decoding}"] = lambda d=decoder: d.sample(prompts, args.samples, T, seed=1)
        first[decoding] = timed(fns[f"sample {decoding}"], device)  # compiled: compiles and captures
    times = common.interleaved({k: (lambda f=f: timed(f, device)) for k, f in fns.items()}, args.repeats)
    med = {k: common.median(v) for k, v in times.items()}
    out = {"seconds": med, "first_sample_seconds": first, "log_prob_overhead": med["log_prob"] / med["raw_forward"] - 1}
    for decoding in args.decodings:
        sample = med[f"sample {decoding}"]
        out[f"sample_overhead {decoding}"] = sample / med["generate"] - 1
        out[f"sample_tokens_per_s {decoding}"] = len(rows) * T / sample
        print(f"overhead ({precision}): sample, {decoding} decoding, {sample:.3f} s vs generate "
              f"{med['generate']:.3f} s ({100 * (sample / med['generate'] - 1):+.1f}%), "
              f"{len(rows) * T / sample:.0f} tokens/s (first call {first[decoding]:.1f} s)", flush=True)
    if {"eager", "compiled"} <= set(args.decodings):
        out["compiled_speedup"] = med["sample eager"] / med["sample compiled"]
        same, diff = common.agreement(view.sample(prompts, args.samples, T, seed=0),
                                      view.view(decoding="compiled").sample(prompts, args.samples, T, seed=0))
        out["compiled_agreement"] = {"same_rows": same, "max_logp_diff_before_divergence": diff}
        print(f"compiled decoding samples {out['compiled_speedup']:.2f}× as fast as eager ({precision}); the same "
              f"seed drew the same tokens in {same}, |Δ log-prob| ≤ {diff:.1e} before a row's first different token",
              flush=True)
    print(f"overhead ({precision}): log_prob {med['log_prob'] * 1e3:.1f} ms vs raw forward "
          f"{med['raw_forward'] * 1e3:.1f} ms ({100 * out['log_prob_overhead']:+.1f}%)", flush=True)
    return out


def static_cache_generate(lm, args, device) -> dict:
    """What a compiled decoder would gain (not bayeslm's sampler): `model.generate` with a static KV cache, which
    transformers compiles (CUDA graphs), against plain `generate` on the same rows, fp32. Decoding a small model
    is bound by kernel launches, not FLOPs; this measures how much of that a graph-captured step removes."""
    from bayeslm.distributions.tokens import pad

    model, T = lm.model, args.max_new_tokens
    rows = [ids for ids in lm.encode_prompts(common.PROMPTS[:args.prompts]) for _ in range(args.samples)]
    ids, mask = (t.to(device) for t in pad(rows, lm.pad_id, "left"))

    def generate(**extra):
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                           max_new_tokens=T, min_new_tokens=T, pad_token_id=lm.pad_id, **extra)

    try:
        first = timed(lambda: generate(cache_implementation="static"), device)  # compiles
        times = common.interleaved({"dynamic": lambda: timed(generate, device),
                                    "static": lambda: timed(lambda: generate(cache_implementation="static"), device)},
                                   args.repeats)
    except Exception as error:  # noqa: BLE001 - a failed experiment is reported, the other figures stand
        print(f"static-cache generate failed: {type(error).__name__}: {str(error)[:300]}", flush=True)
        return {"error": str(error)[:1000]}
    med = {k: common.median(v) for k, v in times.items()}
    print(f"generate, dynamic cache {med['dynamic']:.3f} s vs static cache (compiled) {med['static']:.3f} s: "
          f"{med['dynamic'] / med['static']:.2f}× (first static call, compiling: {first:.1f} s)", flush=True)
    return {"seconds": med, "first_call_seconds": first, "speedup": med["dynamic"] / med["static"]}


def inference_peak(lm, args, device, precision: str) -> int:
    """Peak GPU bytes of sampling a step's batch and scoring it under the model and the prior."""
    view = lm.view(autocast=PRECISIONS[precision])
    torch.cuda.reset_peak_memory_stats(device)
    samples = view.sample(common.PROMPTS[:args.prompts], args.samples, args.max_new_tokens, seed=0)
    with torch.no_grad():
        view.log_prob(samples.sample_prompts, samples.continuations)
    return torch.cuda.max_memory_allocated(device)


def train_figures(model, tokenizer, args, device, mode: str, precision: str, peak_bf16: float,
                  backward: int | None = None, flops: int | None = None, decoding: str = "eager") -> dict:
    """One configuration's steps; `flops` given (the same work as a configuration already counted) skips the
    count: FlopCounterMode rejects the grouped-query attention call that small slices take, and does not see
    inside compiled graphs."""
    import bayeslm as bl
    gc.collect()  # the previous configuration's models, before any peak is read
    torch.cuda.empty_cache()
    n = args.prompts * args.samples
    lm = prior_lm(model, tokenizer, device, n)
    inference = inference_peak(lm, args, device, precision)
    settings = {"steps": 10**6, "prompts_per_step": args.prompts,
                "samples_per_prompt": args.samples, "lr": 1e-5, "precision": precision, "eval_n": 0,
                "batch_size": n, "backward_batch_size": backward, "device": str(device), "decoding": decoding}
    lora = bl.LoRA(r=8, alpha=16) if mode == "lora" else None
    trainer = bl.Trainer(target_of(lm, args), lora=lora, quiet=True, **settings)
    trainer.model.eos_ids = torch.tensor([-1])
    torch.cuda.reset_peak_memory_stats(device)
    if flops is None:
        flops = common.count_flops(trainer.step)  # also the first warm-up step
    else:
        trainer.step()
    for _ in range(args.warmup - 1):
        trainer.step()
    seconds, records = [], []
    for _ in range(args.steps):
        seconds.append(timed(lambda: records.append(trainer.step()), device))
    training = torch.cuda.max_memory_allocated(device)
    t = common.median(seconds)
    row = {"mode": mode, "precision": precision, "decoding": decoding, "backward_batch_size": backward or n,
           "step_seconds": seconds, "samples_per_s": n / t,
           "tokens_per_s": n * args.max_new_tokens / t, "flops": flops, "achieved_tflops": flops / t / 1e12,
           "fraction_of_bf16_peak": flops / t / 1e12 / peak_bf16, "times_bf16_floor": t * peak_bf16 * 1e12 / flops,
           "sample_seconds": common.median([r["sample_seconds"] for r in records]),
           "peak_gib": training / 2**30, "inference_peak_gib": inference / 2**30,
           "memory_vs_inference": training / inference}
    print(f"train {mode:4s} {precision} {decoding} ({row['backward_batch_size']} rows per backward): step "
          f"{common.spread(seconds)} (sampling {row['sample_seconds']:.3f} s), "
          f"{row['samples_per_s']:.1f} samples/s, {row['tokens_per_s']:.0f} tokens/s; {flops / 1e12:.2f} TFLOP/step "
          f"= {row['achieved_tflops']:.1f} TFLOP/s, {100 * row['fraction_of_bf16_peak']:.1f}% of the bf16 peak "
          f"({row['times_bf16_floor']:.0f}× the floor); peak memory {row['peak_gib']:.2f} GiB = "
          f"{row['memory_vs_inference']:.2f}× inference ({row['inference_peak_gib']:.2f} GiB)", flush=True)
    return row


def trl_figures(model, tokenizer, args, device, ours: list[dict]) -> list[dict]:
    """TRL against bayeslm (bf16) on the same GPU: vs_trl.py's worker, on this model saved to disk."""
    import vs_trl

    directory = Path(tempfile.mkdtemp(prefix="bayeslm-gpu-model-"))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    trl_args = argparse.Namespace(prompts=args.prompts, samples=args.samples, max_new_tokens=args.max_new_tokens,
                                  model_dir=directory, device=device.type, trl_python=sys.executable)
    rows = []
    for mode in {r["mode"] for r in ours}:
        mine = max((r for r in ours if r["mode"] == mode and r["precision"] == "bf16"
                    and r["backward_batch_size"] == args.prompts * args.samples), key=lambda r: r["samples_per_s"])
        for setting in ("best", "default"):
            try:
                result = vs_trl.run_trl(trl_args, mode, setting, args.steps, args.warmup)
            except RuntimeError as error:  # TRL's failure is a finding, not the end of the other figures
                print(f"TRL {mode}/{setting}: {error}", flush=True)
                continue
            t = common.median(result["step_seconds"])
            result["samples_per_s"] = args.prompts * args.samples / t
            result["ratio_bayeslm_over_trl"] = mine["samples_per_s"] / result["samples_per_s"]
            rows.append(result)
            print(f"TRL {mode:4s} {setting:7s} (bf16={result['bf16']}, gradient_checkpointing="
                  f"{result['gradient_checkpointing']}): step {common.spread(result['step_seconds'])}, "
                  f"{result['samples_per_s']:.1f} samples/s; bayeslm bf16 / TRL = "
                  f"{result['ratio_bayeslm_over_trl']:.2f}× ({mine['decoding']} decoding)", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", help="SmolLM2's config.json and tokenizer (default: the embedded prior's cache)")
    parser.add_argument("--models", default="smollm2,1b")
    parser.add_argument("--modes", default="lora,full")
    parser.add_argument("--precisions", default="bf16,fp32")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of the overhead comparisons")
    parser.add_argument("--matmul-size", type=int, default=8192)
    parser.add_argument("--backward-batch-sizes", type=lambda t: [int(x) for x in t.split(",")], default=[],
                        help="also train with these backward_batch_size values (rows back-propagated at once)")
    parser.add_argument("--trl", action="store_true", help="also time TRL's RLOOTrainer (trl must be importable)")
    parser.add_argument("--static-generate", action="store_true",
                        help="also time model.generate with a compiled static KV cache (an experiment)")
    parser.add_argument("--decodings", type=lambda t: t.split(","), default=["eager", "compiled"],
                        help="LM decodings to sample and train with (eager, compiled)")
    parser.add_argument("--json", help="also write the figures to this file (after each model)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs a GPU that torch can see")
    device = torch.device("cuda")
    from bayeslm.distributions.loading import _default_prior_dir

    assets = Path(args.assets) if args.assets else _default_prior_dir()
    properties = torch.cuda.get_device_properties(device)
    import transformers

    print(f"# {properties.name}, {properties.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, "
          f"transformers {transformers.__version__}", flush=True)
    figures = {"config": vars(args), "gpu": properties.name, "torch": torch.__version__,
               "peaks_tflops": matmul_peaks(device, args.matmul_size, 10), "models": {}}
    modes, precisions = args.modes.split(","), args.precisions.split(",")
    for name in args.models.split(","):
        model, tokenizer = build(assets, name)
        params = sum(p.numel() for p in model.parameters())
        print(f"\n## {name}: {params / 1e6:.0f} M parameters (random weights from the config)", flush=True)
        lm = prior_lm(model, tokenizer, device, args.prompts * args.samples)
        entry = {"parameters": params, "agreement": agreement(lm, args),
                 "overhead": {p: overhead(lm, args, device, p) for p in precisions}}
        if args.static_generate:
            entry["static_cache_generate"] = static_cache_generate(lm, args, device)
        del lm
        entry["training"] = []
        for mode in modes:
            for precision in precisions:
                peak = figures["peaks_tflops"]["bf16"]
                rows = [train_figures(model, tokenizer, args, device, mode, precision, peak)]
                rows += [train_figures(model, tokenizer, args, device, mode, precision, peak, None, rows[0]["flops"],
                                       decoding) for decoding in args.decodings if decoding != "eager"]
                rows += [train_figures(model, tokenizer, args, device, mode, precision, peak, backward,
                                       rows[0]["flops"]) for backward in args.backward_batch_sizes]
                entry["training"] += rows
        if args.trl:
            entry["trl"] = trl_figures(model, tokenizer, args, device, entry["training"])
        figures["models"][name] = entry
        common.emit_json(args.json, figures)
    print("\n" + json.dumps({k: {"training": [(r["mode"], r["precision"], r["decoding"], round(r["samples_per_s"], 2))
                                             for r in v["training"]]} for k, v in figures["models"].items()}))


if __name__ == "__main__":
    main()
