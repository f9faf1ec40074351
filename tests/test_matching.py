import numpy as np
import pytest

from fcit_flower.similarity import cosine_matrix
from fcit_flower.strategies.matching import TokenSlots


def unit(*values):
    v = np.asarray(values, dtype=float)
    return v / np.linalg.norm(v)


def test_cosine_matrix():
    sims = cosine_matrix(np.eye(2), np.array([[1.0, 1.0]]))
    assert sims[:, 0] == pytest.approx([2**-0.5, 2**-0.5])


def test_first_token_opens_slot_and_similar_joins():
    slots = TokenSlots(capacity=3, tau=0.9)
    first = slots.match(unit(1, 0, 0), 10)
    assert first.opened and first.slot == 0
    joined = slots.match(unit(1, 0.1, 0), 30)
    assert joined.slot == 0 and not joined.opened
    assert joined.similarity > 0.9
    # slot token = sample-weighted mean of its members
    expected = (10 * unit(1, 0, 0) + 30 * unit(1, 0.1, 0)) / 40
    np.testing.assert_allclose(slots.tokens[0], expected)
    assert slots.weights == [40.0]


def test_dissimilar_opens_new_slot():
    slots = TokenSlots(capacity=3, tau=0.9)
    slots.match(unit(1, 0, 0), 1)
    result = slots.match(unit(0, 1, 0), 1)
    assert result.opened and result.slot == 1 and len(slots) == 2


def test_overflow_merges_into_most_similar():
    slots = TokenSlots(capacity=2, tau=0.99)
    slots.match(unit(1, 0, 0), 1)
    slots.match(unit(0, 1, 0), 1)
    result = slots.match(unit(0.2, 1, 0), 1)
    assert result.overflow and result.slot == 1 and not result.opened
    assert len(slots) == 2


def test_greedy_clustering_of_a_round():
    slots = TokenSlots(capacity=8, tau=0.9)
    tokens = [unit(1, 0, 0), unit(0, 0, 1), unit(1, 0.05, 0), unit(0, 0.05, 1)]
    results = slots.match_all(tokens, [5, 5, 5, 5])
    assert [r.slot for r in results] == [0, 1, 0, 1]
    assert [r.opened for r in results] == [True, True, False, False]
