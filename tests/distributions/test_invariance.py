"""Property-based: a continuation's log-probability depends on its prompt and tokens only, never on how it was
batched: not on the padding side, the other rows of the batch (their number, lengths and order), nor how a
large batch is cut into chunks.

Tolerance: the same fp32 arithmetic is done on differently shaped tensors (other padding, other batch sizes),
so matrix products may reduce in another order; masked positions contribute exact zeros. Each token's log-prob
then moves by a few ulps, and a sum of up to ~20 tokens of a few nats each by at most ~1e-6 relative (fp32 eps
is 1.2e-7): |Δ| ≤ 1e-5 + 1e-6·|score| (measured worst case on the toy: 8e-6 at 37 nats).
"""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bayeslm.distributions.toy import WORDS

PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
prompt = st.lists(st.sampled_from(WORDS), max_size=12).map(" ".join)  # "" included: BOS alone
continuation = st.lists(st.integers(0, len(WORDS) + 1), min_size=0, max_size=10)  # any id: EOS, BOS, words
row = st.tuples(prompt, continuation)


def assert_same_scores(a: torch.Tensor, b: torch.Tensor):
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-6), (a - b).abs().max()


def scores(lm, rows, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return lm.token_log_probs([p for p, _ in rows], [c for _, c in rows], **kwargs)


@PROPERTY
@given(batch=st.lists(row, min_size=1, max_size=6))
def test_padding_side_does_not_change_log_prob(prior, batch):
    assert_same_scores(scores(prior, batch, padding_side="left"), scores(prior, batch, padding_side="right"))


@PROPERTY
@given(alone=row, others=st.lists(row, max_size=7), where=st.integers(0, 7), side=st.sampled_from(["left", "right"]))
def test_other_rows_of_a_batch_do_not_change_log_prob(prior, alone, others, where, side):
    """A row scored alone and within a batch of random rows (any lengths, any position) scores the same."""
    where = min(where, len(others))
    batch = others[:where] + [alone] + others[where:]
    width = len(alone[1])
    within = scores(prior, batch, padding_side=side)[where]
    assert_same_scores(scores(prior, [alone], padding_side=side)[0, :width], within[:width])
    assert (within[width:] == 0).all()  # past its end a row scores exactly 0, however long the others are


@PROPERTY
@given(batch=st.lists(row, min_size=1, max_size=8), chunk=st.integers(1, 4))
def test_batch_order_and_chunking_do_not_change_log_prob(prior, batch, chunk):
    whole = prior.log_prob([p for p, _ in batch], [c for _, c in batch])
    reversed_batch = prior.log_prob([p for p, _ in batch][::-1], [c for _, c in batch][::-1]).flip(0)
    small = prior.view(batch_size=chunk)  # the same model, cut into chunks of `chunk` rows
    chunked = small.log_prob([p for p, _ in batch], [c for _, c in batch])
    assert_same_scores(whole, reversed_batch)
    assert_same_scores(whole, chunked)
