import numpy as np
import pytest

from fcit_flower.tasks.partition import dirichlet_sizes, size_gini


def test_sizes_sum_and_minimum():
    sizes = dirichlet_sizes(400, 10, 1.0, seed=3, min_size=2)
    assert sum(sizes) == 400
    assert len(sizes) == 10
    assert min(sizes) >= 2


def test_seeded_and_seed_sensitive():
    assert dirichlet_sizes(400, 10, 1.0, seed=1) == dirichlet_sizes(
        400, 10, 1.0, seed=1
    )
    assert dirichlet_sizes(400, 10, 1.0, seed=1) != dirichlet_sizes(
        400, 10, 1.0, seed=2
    )


def test_small_beta_is_more_skewed():
    def mean_gini(beta):
        return np.mean(
            [size_gini(dirichlet_sizes(1000, 10, beta, seed=s)) for s in range(30)]
        )

    assert mean_gini(0.5) > mean_gini(1.0) > mean_gini(5.0)
    assert mean_gini(5.0) < 0.25


@pytest.mark.parametrize(
    "args, match",
    [((10, 5, 0.0), "beta"), ((10, 0, 1.0), "num_clients"), ((3, 5, 1.0), "at least")],
)
def test_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        dirichlet_sizes(*args, seed=0)


def test_gini_of_equal_sizes_is_zero():
    assert size_gini([5, 5, 5, 5]) == pytest.approx(0.0)
    assert size_gini([0, 0, 0, 20]) == pytest.approx(0.75)
