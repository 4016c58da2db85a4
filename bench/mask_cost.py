"""Issue 21: what the mask of a structured potential costs per decoding step, against the step itself
(SmolLM2-135M-Instruct, the embedded prior; target: under 10%).

    .venv/bin/python bench/mask_cost.py [--prompts 16] [--samples 4] [--max-new-tokens 48] [--repeats 3]

For each language (a regular expression and a small JSON schema), `masked(prior).sample(...)` is timed whole
and, within the same calls, the time spent in the mask: computing the allowed tokens of every row (llguidance's
bitmask, unpacked), renormalising the log-probabilities over them, and advancing every row's matcher by its
token. mask share = mask time / (whole − mask time): the mask's cost relative to the rest of a decoding step
(forward pass, sampling, bookkeeping). The plain prior's `sample` of the same batch is timed beside it, and the
decoding steps taken by each call are counted, so that per-step times compare though the masked rows stop
elsewhere.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

LANGUAGES = {
    "regex": ("regex", r"[A-Z][a-z]+( [a-z]+){3,20}\."),
    "json_schema": ("json_schema", {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 30}, "rating": {"type": "integer", "minimum": 1, "maximum": 5},
        "sunny": {"type": "boolean"}}, "required": ["city", "rating", "sunny"], "additionalProperties": False}),
}


class MaskClock:
    """Accumulates the time spent in `Masks.apply` and `Masks.advance` while installed."""

    def __init__(self):
        from bayeslm.distributions import masking

        self.masking, self.seconds, self.steps = masking, 0.0, 0
        self.apply, self.advance = masking.Masks.apply, masking.Masks.advance

    def __enter__(self):
        clock = self

        def apply(masks, log_probs):
            started = time.perf_counter()
            out = clock.apply(masks, log_probs)
            clock.seconds += time.perf_counter() - started
            clock.steps += 1
            return out

        def advance(masks, tokens, live):
            started = time.perf_counter()
            clock.advance(masks, tokens, live)
            clock.seconds += time.perf_counter() - started

        self.masking.Masks.apply, self.masking.Masks.advance = apply, advance
        return self

    def __exit__(self, *exc):
        self.masking.Masks.apply, self.masking.Masks.advance = self.apply, self.advance


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    common.print_machine()
    import bayeslm as bl

    prior = bl.load_lm("default", batch_size=args.prompts * args.samples)
    prompts = [p + " Answer in the format asked." for p in (common.PROMPTS * args.prompts)[:args.prompts]]
    figures = {"machine": common.machine(), "settings": vars(args), "languages": {}}
    print(f"# {args.prompts} prompts × {args.samples} samples, max_new_tokens {args.max_new_tokens}, "
          f"{args.repeats} repeats (median)")
    print(f"{'language':12s} {'plain s/step':>13s} {'masked s/step':>14s} {'mask s/step':>12s} {'mask share':>11s}")
    for name, (kind, source) in LANGUAGES.items():
        potential = getattr(bl, kind)(prior, source)
        q = bl.masked((prior * potential).given(prompts, max_new_tokens=args.max_new_tokens))
        q.sample(prompts[:1], 1, 4, seed=0)  # compiles nothing, but builds llguidance's tokenizer once
        plain, masked, mask = [], [], []
        for r in range(args.repeats):  # interleaved, so that a drift of the machine hits both alike
            started = time.perf_counter()
            draws = prior.sample(prompts, args.samples, args.max_new_tokens, seed=r)
            plain.append((time.perf_counter() - started) / int(draws.length.max()))
            with MaskClock() as clock:
                started = time.perf_counter()
                q.sample(prompts, args.samples, args.max_new_tokens, seed=r)
                whole = time.perf_counter() - started
            masked.append(whole / clock.steps)
            mask.append(clock.seconds / clock.steps)
        share = common.median(mask) / (common.median(masked) - common.median(mask))
        print(f"{name:12s} {common.median(plain):13.4f} {common.median(masked):14.4f} {common.median(mask):12.4f} "
              f"{share:10.1%}")
        figures["languages"][name] = {"source": source, "plain_s_per_step": plain, "masked_s_per_step": masked,
                                      "mask_s_per_step": mask, "mask_share": share}
    common.emit_json(args.json, figures)


if __name__ == "__main__":
    main()
