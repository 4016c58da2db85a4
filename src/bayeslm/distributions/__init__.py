"""Distributions: a causal LM seen as a distribution over continuations (π0, π_θ or a proposal q).

    lm.py        LM: sampling and scoring with exact log-probabilities, views (warp, adapter off, decoding)
    scoring.py   the scoring engine behind LM.log_prob / token_log_probs / kl
    head.py      the output head's log-probabilities and KL in chunks of positions
    decoding.py  token-by-token decoding on a KV cache, eager or compiled (`decoder` picks one)
    runnable.py  Runnable: what decoding and scoring need of an LM (LM is one)
    warp.py      temperature, top-k, top-p;   tokens.py  padding, shared prompts, drawing a token
    loading.py   where models come from (the embedded prior, local directories);   toy.py  enumerable priors
    enumeration.py  every continuation of a small space;   threads.py  how many CPU threads torch uses
    language.py, grammars.py, masking.py  formal languages over bytes (llguidance) and decoding masked to them
"""
