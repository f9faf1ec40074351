import numpy as np
import pytest

from fcit_flower.tasks.metrics import (
    average_accuracy,
    backward_transfer,
    exact_match,
    headroom_share,
    last_accuracy,
    rouge_l,
    score,
    substring_match,
    summarize,
)

# rows: after stage i; columns: tasks learned at stages 0, 1, 2
MATRIX = np.array(
    [
        [80.0, 10.0, 5.0],
        [60.0, 90.0, 0.0],
        [40.0, 70.0, 85.0],
    ]
)
SEEN = [[0], [0, 1], [0, 1, 2]]


def test_last_is_mean_of_final_row():
    assert last_accuracy(MATRIX) == pytest.approx((40 + 70 + 85) / 3)


def test_avg_is_mean_over_stages_of_seen_tasks():
    expected = np.mean([80.0, (60 + 90) / 2, (40 + 70 + 85) / 3])
    assert average_accuracy(MATRIX, SEEN) == pytest.approx(expected)


def test_bwt_hand_computed():
    # task 0: 40 - 80 = -40; task 1: 70 - 90 = -20; task 2 learned last: excluded
    assert backward_transfer(MATRIX, [0, 1, 2]) == pytest.approx(-30.0)
    assert summarize(MATRIX, SEEN, [0, 1, 2])["bwt"] == pytest.approx(-30.0)


def test_bwt_undefined_when_no_task_finished_before_the_last_stage():
    assert backward_transfer(MATRIX, [2, 2, 2]) is None
    assert summarize(MATRIX, SEEN, [2, 2, 2])["bwt"] is None


def test_numbers_compare_as_numbers_only_when_normalized():
    assert score("exact", ["seven", "7.0", " 7 "], ["7", "7", "7"]) == 100.0
    strict = score("exact", ["seven", "7.0", " 7 "], ["7", "7", "7"], strict=True)
    assert strict == pytest.approx(100 / 3)
    assert score("choice", ["(B)", "b"], ["B", "B"]) == 100.0
    assert score("choice", ["(B)", "b"], ["B", "B"], strict=True) == 50.0
    assert score("substring", ["It is Yes."], ["yes"], strict=True) == 100.0
    assert score("substring", [""], ["yes"], strict=True) == 0.0


def test_headroom_share_matches_the_paper():
    assert headroom_share(47.20, 29.08, 66.60) == pytest.approx(0.4829, abs=1e-4)
    assert headroom_share(10.0, 20.0, 20.0) is None


def test_bwt_zero_without_forgetting():
    flat = np.array([[50.0, 0.0], [50.0, 60.0]])
    assert backward_transfer(flat, [0, 1]) == 0.0


def test_exact_match_normalizes():
    assert exact_match("The Red.", "red") == 1.0
    assert exact_match("Top  Left", "top left") == 1.0
    assert exact_match("blue", "red") == 0.0


def test_substring_match():
    assert substring_match("the answer is 4", "4") == 1.0
    assert substring_match("yes", "no") == 0.0
    assert substring_match("anything", "") == 0.0


def test_rouge_l_known_pairs():
    assert rouge_l("a red circle", "a red circle") == pytest.approx(1.0)
    assert rouge_l("green square", "a red circle") == 0.0
    # LCS("a red square", "a red circle") = 2, P = R = 2/3 -> F = 2/3
    assert rouge_l("a red square", "a red circle") == pytest.approx(2 / 3)


def test_score_percent_and_unknown_metric():
    assert score("exact", ["a", "b"], ["a", "c"]) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="unknown metric"):
        score("bleu-9", ["a"], ["a"])
