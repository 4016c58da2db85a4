"""Speed fixes for lm.py / train.py, measured side by side in one process:

    .venv/bin/python bench/speedups.py [--prompts 16] [--samples 4] [--max-new-tokens 32] [--repeats 2]

1. merged LoRA for sampling (a candidate, monkeypatched here): a LoRA model samples through PEFT's wrapped
   linear layers (two extra small products and Python per layer per token); merging the adapter into the weights
   for the duration of `sample` (peft `merge_adapter` / `unmerge_adapter`) runs the plain model instead. Timed:
   `model.sample` as is against merge + sample + unmerge, interleaved.
2. one prior pass per step instead of two (applied: `Objective.scores_prior`): KL-RL takes log π0 from the prior
   pass its loss runs anyway, instead of scoring the samples under the prior first. Timed: `Trainer.step` with
   `scores_prior` on and off, interleaved (the figures are the same either way; tests/test_train.py).
3. each prompt run once for its samples (applied: `tokens.distinct`): sampling prefills each distinct prompt once and
   repeats its KV cache for the prompt's samples; scoring does the same, so the model and the prior each run
   P + n·L positions per prompt instead of n·(P + L). Timed: `Trainer.step` and `sample` as they are against every
   row run whole (`tokens.distinct` patched to call every row distinct), interleaved.
4. drawing each token by inverting the CDF at one uniform per row (applied: `tokens.draw`) instead of
   `torch.multinomial`, which draws one exponential per vocabulary entry per row. Timed: `sample` with each,
   interleaved, and one 64-row draw over SmolLM2's vocabulary alone.
5. the output head's backward reusing the distributions of its forward (applied: `head.KEEP_ELEMENTS`) instead of
   running the model's and the prior's head products again. Timed: `Trainer.step` with each, interleaved.
All with LoRA r = 8, fp32, 16 prompts × 4 samples, sampling never stopped by EOS (equal work every call).
(Session 2's third candidate, the output head on a contiguous slice, is applied in `bayeslm/head.py`.)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import torch  # noqa: E402

from bayeslm.distributions import decoding, head, scoring, tokens  # noqa: E402


def _with(attr: str, value, run, *modules):
    """`run` with `<module>.<attr>` replaced by `value` in each module that uses it (default: where the token
    helpers are used: decoding, scoring) while it runs: the variant a candidate is timed against."""
    modules = modules or (decoding, scoring)

    def patched():
        kept = [getattr(module, attr) for module in modules]
        for module in modules:
            setattr(module, attr, value)
        try:
            return run()
        finally:
            for module, original in zip(modules, kept):
                setattr(module, attr, original)
    return patched


def _compare(title: str, times: dict[str, list[float]], before: str, after: str) -> float:
    """Prints each variant's timings under `title`; returns the speed-up of `after` over `before` (medians)."""
    print(f"\n## {title}")
    width = max(map(len, times)) + 1
    for name, ts in times.items():
        print(f"{name:{width}s} {common.spread(ts)}")
    return common.median(times[before]) / common.median(times[after])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", default="merge,prior,share,draw,keep",
                        help="comma-separated subset of merge,prior,share,draw,keep")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    common.print_machine()
    trainer = common.klrl_trainer(lora=True, n_prompts=args.prompts, samples_per_prompt=args.samples,
                                  max_new_tokens=args.max_new_tokens, batch_size=args.prompts * args.samples,
                                  fixed_length=True)
    trainer.step()  # the adapter moves off zero, so merging changes the weights for real
    model, prompts, T = trainer.model, trainer._prompts(0), args.max_new_tokens
    figures = {"config": vars(args)}

    def sample():
        return model.sample(prompts, args.samples, T, seed=0)

    if "merge" in args.only:
        def merged():
            model.model.merge_adapter()
            try:
                return sample()
            finally:
                model.model.unmerge_adapter()

        a, b = sample(), merged()
        same, diff = common.agreement(a, b)
        times = common.interleaved({"adapter": sample, "merged": merged}, args.repeats)
        gain = _compare(f"LoRA sampling, {len(prompts)}×{args.samples} rows × {T} tokens", times, "adapter", "merged")
        print(f"merged is {gain:.2f}× as fast; same tokens: {same}; max |Δ log-prob| before a row differs {diff:.2e}")
        figures["merge"] = {"seconds": times, "speedup": gain, "same_tokens": same, "max_logprob_diff": diff}
    if "prior" in args.only:
        def passes(one: bool):
            def step():
                trainer.objective.scores_prior = one
                trainer.step()
            return step

        times = common.interleaved({"two prior passes": passes(False), "one prior pass": passes(True)}, args.repeats,
                                   warmup=0)
        gain = _compare(f"LoRA KL-RL step, {len(prompts)}×{args.samples} samples × {T} tokens", times,
                        "two prior passes", "one prior pass")
        print(f"one prior pass per step is {gain:.2f}× as fast")
        figures["prior"] = {"seconds": times, "speedup": gain}
    if "share" in args.only:
        def every_row(rows, device):
            return [tuple(r) for r in rows], torch.arange(len(rows), device=device)

        a, b = sample(), _with("distinct", every_row, sample)()
        same, diff = common.agreement(a, b)
        figures["share"] = {}
        for what, run, warmup in (("sampling", sample, 1), ("KL-RL step", trainer.step, 0)):
            times = common.interleaved({"every row whole": _with("distinct", every_row, run), "prompts once": run},
                                       args.repeats, warmup=warmup)
            gain = _compare(f"LoRA {what}, {len(prompts)}×{args.samples} rows × {T} tokens", times,
                            "every row whole", "prompts once")
            print(f"running each prompt once is {gain:.2f}× as fast")
            figures["share"][what] = {"seconds": times, "speedup": gain}
        print(f"sampling: same tokens: {same}; max |Δ log-prob| before a row differs {diff:.2e}")
        figures["share"].update(same_tokens=same, max_logprob_diff=diff)
    if "draw" in args.only:
        def multinomial(log_probs, generator):
            return torch.multinomial(log_probs.exp(), 1, generator=generator).squeeze(-1)

        times = common.interleaved({"multinomial": _with("draw", multinomial, sample, decoding), "inverse CDF": sample},
                                   args.repeats)
        gain = _compare(f"LoRA sampling, {len(prompts)}×{args.samples} rows × {T} tokens", times, "multinomial",
                        "inverse CDF")
        log_probs = torch.randn(len(prompts) * args.samples, model.model.config.vocab_size).log_softmax(-1)
        generator = torch.Generator().manual_seed(0)
        alone = {}
        for name, fn in (("multinomial", multinomial), ("inverse CDF", tokens.draw)):
            start = time.perf_counter()
            for _ in range(10):
                fn(log_probs, generator)
            alone[name] = (time.perf_counter() - start) / 10
        print(f"inverse CDF sampling is {gain:.2f}× as fast; one {log_probs.shape[0]}-row draw: multinomial "
              f"{alone['multinomial'] * 1e3:.1f} ms, inverse CDF {alone['inverse CDF'] * 1e3:.1f} ms")
        figures["draw"] = {"seconds": times, "speedup": gain, "one_draw_seconds": alone}
    if "keep" in args.only:
        times = common.interleaved({"recomputed": _with("KEEP_ELEMENTS", 0, trainer.step, head),
                                    "kept": trainer.step}, args.repeats, warmup=0)
        gain = _compare(f"LoRA KL-RL step, {len(prompts)}×{args.samples} samples × {T} tokens", times, "recomputed",
                        "kept")
        print(f"keeping the head's distributions for backward is {gain:.2f}× as fast")
        figures["keep"] = {"seconds": times, "speedup": gain}
    common.emit_json(args.json, figures)


if __name__ == "__main__":
    main()
