import math

from bayeslm.measurement.diversity import distinct_n, self_bleu


def test_distinct_n_counts_unique_ngrams():
    texts = ["a b a", "a b c"]
    assert math.isclose(distinct_n(texts, 1), 3 / 6)
    assert math.isclose(distinct_n(texts, 2), 3 / 4)  # ab, ba, ab, bc
    assert distinct_n(["a"], 2) == 0.0


def test_self_bleu_is_one_for_identical_texts_and_small_for_disjoint_ones():
    assert math.isclose(self_bleu(["the cat sat on the mat"] * 4), 1.0)
    assert self_bleu(["the cat sat on the mat", "dogs run fast in parks", "green ideas sleep well now"]) < 0.05


def test_self_bleu_grows_with_overlap():
    low = self_bleu(["a b c d e", "f g h i j", "k l m n o"])
    high = self_bleu(["a b c d e", "a b c d x", "a b c y z"])
    assert low < high < 1
