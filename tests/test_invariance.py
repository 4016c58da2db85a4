"""Property-based: padding side, batch composition and prompt length never change a score."""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bayeslm.toy import WORDS

words = st.lists(st.sampled_from(WORDS), max_size=5).map(" ".join)
continuation = st.lists(st.integers(0, len(WORDS) + 1), min_size=1, max_size=6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(st.tuples(words, continuation), min_size=1, max_size=6))
def test_score_is_independent_of_padding_and_batch(prior, batch):
    prompts, conts = [p for p, _ in batch], [c for _, c in batch]
    left = prior.log_prob(prompts, conts, padding_side="left")
    right = prior.log_prob(prompts, conts, padding_side="right")
    alone = torch.stack([prior.log_prob([p], [c])[0] for p, c in batch])
    reversed_batch = prior.log_prob(prompts[::-1], conts[::-1]).flip(0)
    for other in (right, alone, reversed_batch):
        assert torch.allclose(left, other, atol=1e-4)
