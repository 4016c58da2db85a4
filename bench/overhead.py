"""Issue 6, item 3: what bayeslm's `LM.sample` and `LM.log_prob` cost over the raw Hugging Face calls they wrap,
on the same batches (SmolLM2-135M-Instruct, the embedded prior).

    .venv/bin/python bench/overhead.py [--prompts 16] [--samples 4] [--max-new-tokens 32] [--repeats 5] [--compiled]

Sampling, every call drawing exactly max_new_tokens tokens per row (EOS does not stop it on either side, so
both do the same work whatever they draw):
  bayeslm   `lm.sample(prompts, n, max_new_tokens)`: chat template, left padding, KV-cache decoding, per-token
            log-probabilities of the distribution sampled, texts decoded
  generate  `model.generate(ids, attention_mask, do_sample=True, top_k=0, top_p=1)` on the already-tokenised,
            already-padded batch: tokens only, no log-probabilities, no texts (the strictest baseline)
  loop      a hand-written KV-cache loop: forward, softmax, multinomial; tokens only
  compiled  (--compiled) `lm.sample` with `decoding: compiled`: a static KV cache and a compiled step (its
            first call compiles and is timed apart)
Scoring, the batch just sampled (no_grad, then with gradients as in training):
  bayeslm   `lm.log_prob(prompts, continuations)`: encodes prompts, pads, one forward pass, log-softmax, gather
  raw       `model(ids, attention_mask, logits_to_keep=L+1)`, log-softmax, gather on the pre-built batch
Overhead = median(bayeslm) / median(raw) − 1, the calls interleaved so a drift in speed hits both alike.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import torch  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compiled", action="store_true", help="also time sample with decoding: compiled")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    common.print_machine()
    from bayeslm.distributions.loading import load_lm
    from bayeslm.distributions.tokens import pad, positions

    rows_total = args.prompts * args.samples
    lm = load_lm("default", batch_size=rows_total)
    lm.eos_ids = torch.tensor([-1])  # never stop at EOS: every call does max_new_tokens steps
    model, T = lm.model, args.max_new_tokens
    prompts = (common.PROMPTS * args.prompts)[:args.prompts]
    rows = [ids for ids in lm.encode_prompts(prompts) for _ in range(args.samples)]
    ids, mask = pad(rows, lm.pad_id, "left")
    gen = torch.Generator().manual_seed(0)

    def bayeslm_sample():
        return lm.sample(prompts, args.samples, T, generator=gen)

    def hf_generate():
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_k=0, top_p=1.0,
                                 temperature=1.0, max_new_tokens=T, min_new_tokens=T, pad_token_id=lm.pad_id)
        assert out.shape[1] == ids.shape[1] + T, out.shape
        return out

    def raw_loop():
        with torch.no_grad():
            m, pos = mask, positions(mask)
            out = model(input_ids=ids, attention_mask=m, position_ids=pos, use_cache=True, logits_to_keep=1)
            cache, tokens = out.past_key_values, []
            for t in range(T):
                token = torch.multinomial(out.logits[:, -1].float().softmax(-1), 1, generator=gen)
                tokens.append(token)
                if t + 1 == T:
                    break
                m = torch.cat([m, torch.ones_like(m[:, :1])], 1)
                pos = pos[:, -1:] + 1
                out = model(input_ids=token, attention_mask=m, position_ids=pos, past_key_values=cache, use_cache=True)
                cache = out.past_key_values
        return torch.cat(tokens, 1)

    print(f"\n## sampling: {args.prompts} prompts × {args.samples} samples = {rows_total} rows, {T} new tokens "
          f"each, prompts {ids.shape[1]} tokens (padded); {args.repeats} interleaved repeats after 1 warm-up")
    samples = bayeslm_sample()
    assert samples.tokens.shape == (rows_total, T) and bool((samples.length == T).all())
    calls = {"bayeslm": bayeslm_sample, "generate": hf_generate, "loop": raw_loop}
    figures = {"config": vars(args), "machine": common.machine(), "sample": {}, "log_prob": {}}
    if args.compiled:
        compiled = lm.view(decoding="compiled")
        calls["compiled"] = lambda: compiled.sample(prompts, args.samples, T, generator=gen)
        figures["sample"]["compiled_first_call_seconds"] = first = common.timed(calls["compiled"])
        same, diff = common.agreement(lm.sample(prompts, args.samples, T, seed=0),
                                      compiled.sample(prompts, args.samples, T, seed=0))
        figures["sample"]["compiled_agreement"] = {"same_rows": same, "max_logp_diff_before_divergence": diff}
        print(f"compiled decoding, first call (compiles): {first:.1f} s; the same seed drew the same tokens in "
              f"{same}, |Δ log-prob| ≤ {diff:.1e} before any row's first different token")
    times = common.interleaved(calls, args.repeats)
    for name, ts in times.items():
        print(f"{name:10s} {common.spread(ts)}  {rows_total * T / common.median(ts):8.1f} tokens/s")
    for base in ("generate", "loop"):
        ratio = common.median(times["bayeslm"]) / common.median(times[base])
        print(f"overhead of sample over {base}: {100 * (ratio - 1):+.1f}%")
        figures["sample"][f"overhead_vs_{base}"] = ratio - 1
    if args.compiled:
        figures["sample"]["compiled_speedup"] = speedup = common.median(times["bayeslm"]) / common.median(
            times["compiled"])
        print(f"compiled decoding samples {speedup:.2f}× as fast as eager decoding")
    figures["sample"]["seconds"] = times

    # Scoring: the continuations just sampled, all of length T.
    conts = samples.continuations
    sample_prompts = samples.sample_prompts
    full, full_mask = pad([p + c for p, c in zip(rows, conts)], lm.pad_id, "left")
    targets = torch.tensor(conts)

    def raw_scores():
        logits = model(input_ids=full, attention_mask=full_mask, position_ids=positions(full_mask),
                       logits_to_keep=T + 1).logits[:, :-1]
        return logits.float().log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1).sum(-1)

    def ours():
        return lm.log_prob(sample_prompts, conts)

    with torch.no_grad():
        assert torch.allclose(ours(), raw_scores(), atol=1e-3), "bayeslm and the raw pass disagree"
        assert torch.allclose(ours(), samples.log_prob, atol=1e-3), "log_prob does not re-score the samples"
    print(f"\n## log_prob: the same {rows_total} rows of {full.shape[1]} tokens (prompt + {T}); "
          f"{args.repeats} interleaved repeats after 1 warm-up")
    for grad in (False, True):
        context = torch.enable_grad if grad else torch.no_grad
        if grad:
            model.requires_grad_(True)

        def run(fn):
            def call():
                with context():
                    out = fn()
                    if grad:
                        out.sum().backward()
                        model.zero_grad(set_to_none=True)
            return call
        times = common.interleaved({"bayeslm": run(ours), "raw": run(raw_scores)}, args.repeats)
        label = "forward + backward" if grad else "no_grad forward"
        for name, ts in times.items():
            print(f"{label:18s} {name:8s} {common.spread(ts)}")
        ratio = common.median(times["bayeslm"]) / common.median(times["raw"])
        print(f"overhead of log_prob over the raw pass ({label}): {100 * (ratio - 1):+.1f}%")
        figures["log_prob"]["backward" if grad else "no_grad"] = {"overhead": ratio - 1, "seconds": times}
    common.emit_json(args.json, figures)


if __name__ == "__main__":
    main()
