import numpy as np
import pytest

from fcit_flower.strategies.aggregation import (
    token_problem,
    upload_problem,
    weighted_average,
)


def test_weighted_average_hand_computed():
    a = {"w": np.array([1.0, 2.0], dtype=np.float32)}
    b = {"w": np.array([3.0, 6.0], dtype=np.float32)}
    out = weighted_average([a, b], [1, 3])
    np.testing.assert_allclose(out["w"], [2.5, 5.0])
    assert out["w"].dtype == np.float32


def test_weighted_average_rejects_zero_weights():
    with pytest.raises(ValueError):
        weighted_average([{"w": np.ones(1)}], [0])


REF = {"w": np.zeros((2, 2), dtype=np.float32)}


@pytest.mark.parametrize(
    "upload, reason",
    [
        ({"w": np.full((2, 2), np.nan, dtype=np.float32)}, "non-finite"),
        ({"w": np.zeros((3, 2), dtype=np.float32)}, "shape"),
        ({"w": np.zeros((2, 2), dtype=np.float64)}, "dtype"),
        ({"v": np.zeros((2, 2), dtype=np.float32)}, "keys differ"),
    ],
)
def test_upload_problems(upload, reason):
    assert reason in upload_problem(upload, REF)


def test_norm_bound():
    big = {"w": np.full((2, 2), 1000.0, dtype=np.float32)}
    assert "norm" in upload_problem(big, REF, max_norm_ratio=10)
    assert upload_problem(big, REF) is None


def test_token_problems():
    assert token_problem(np.ones(4), 4) is None
    assert "shape" in token_problem(np.ones(3), 4)
    assert "zero norm" in token_problem(np.zeros(4), 4)
    assert "non-finite" in token_problem(np.array([np.nan, 1, 1, 1]), 4)


def test_weighted_average_consumes_a_generator_once():
    uploads = [{"w": np.full(3, float(i), np.float32)} for i in range(4)]
    consumed = []

    def stream():
        for upload in uploads:
            consumed.append(1)
            yield upload

    weights = [1.0, 2.0, 3.0, 4.0]
    streamed = weighted_average(stream(), weights)
    assert len(consumed) == 4
    np.testing.assert_array_equal(
        streamed["w"], weighted_average(uploads, weights)["w"]
    )
    assert streamed["w"].dtype == np.float32
    with pytest.raises(ValueError):
        weighted_average(iter([]), [])
