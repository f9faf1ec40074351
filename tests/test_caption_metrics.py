"""Captioning, grounding and multiple-choice scores against hand-computed values."""

import math

import pytest

from fcit_flower.tasks.caption_metrics import (
    bleu4,
    caption_scores,
    cider_d,
    meteor,
    rouge_l_corpus,
)
from fcit_flower.tasks.catalog import METRIC_TABLE, get_task
from fcit_flower.tasks.metrics import (
    box_iou,
    choice_match,
    grounding_match,
    parse_box,
    parse_choice,
    score,
)


def test_bleu4_hand_computed_with_brevity_penalty():
    # p1..p4 = 4/5, 3/4, 2/3, 1/2; c = 5 < r = 6
    expected = (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25 * math.exp(1 - 6 / 5)
    assert bleu4(["a b c d e"], ["a b c d f g"]) == pytest.approx(expected)


def test_bleu4_identical_is_one_and_no_4gram_is_zero():
    assert bleu4(["The cat sat on the mat."], ["the cat sat on the mat"]) == 1.0
    assert bleu4(["a b c"], ["a b c"]) == 0.0  # no 4-gram, no smoothing


def test_bleu4_clips_repeated_words_and_picks_closest_reference():
    # "the the the the" vs ref with one "the": p1 = 1/4, no 2-gram match -> 0
    assert bleu4(["the the the the"], ["the cat sat here"]) == 0.0
    # Closest reference length 4 (not 8): no brevity penalty.
    value = bleu4(["a b c d"], [["a b c d", "a b c d e f g h"]])
    assert value == pytest.approx(1.0)


def test_meteor_fragmentation_penalty():
    # three matches in three chunks: penalty 0.5 * 1 ** 3; Fmean = 1
    assert meteor(["b a c"], ["a b c"]) == pytest.approx(0.5)
    # one chunk of six: 1 - 0.5 / 216
    assert meteor(["a cat sat on the mat"], ["a cat sat on the mat"]) == (
        pytest.approx(1 - 0.5 / 216)
    )


def test_meteor_partial_match():
    # hyp "a b x" vs ref "a b c d": m=2, P=2/3, R=1/2, one chunk
    p, r = 2 / 3, 1 / 2
    fmean = 10 * p * r / (r + 9 * p)
    assert meteor(["a b x"], ["a b c d"]) == pytest.approx(fmean * (1 - 0.5 / 8))


def test_cider_d_two_images_hand_computed():
    # image 1: identical -> n=1 and n=2 cosines 1, n=3,4 empty -> 10 * 2 / 4 = 5
    # image 2: "c e" vs "c d": n=1 cosine 1/2, n=2 0 -> 10 * 0.5 / 4 = 1.25
    assert cider_d(["a b", "c e"], ["a b", "c d"]) == pytest.approx((5 + 1.25) / 2)


def test_cider_d_length_penalty_and_single_image():
    assert cider_d(["a b"], ["a b"]) == 0.0  # one image: every idf is log(1/1)
    short = cider_d(["a b", "c d"], ["a b x y z w v u", "c d"])
    full = cider_d(["a b x y z w v u", "c d"], ["a b x y z w v u", "c d"])
    assert short < full


def test_rouge_and_caption_scores_percent():
    assert rouge_l_corpus(["a b c"], ["a b c"]) == pytest.approx(1.0)
    scores = caption_scores(["a b c d", "e f"], ["a b c d", "e g"])
    assert set(scores) == {"bleu-4", "meteor", "rouge-l", "cider"}
    assert scores["rouge-l"] == pytest.approx(100 * (1 + 0.5) / 2)


def test_parse_box_and_iou():
    assert parse_box("box: [0.1, 0.2, 0.5,0.6].") == (0.1, 0.2, 0.5, 0.6)
    assert parse_box("[12, 30, 200, 310]") == (12.0, 30.0, 200.0, 310.0)
    assert parse_box("no box here") is None
    assert box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0


def test_grounding_match_threshold_and_units():
    assert grounding_match("[0, 0, 10, 6]", "[0, 0, 10, 10]") == 1.0  # IoU 0.6
    assert grounding_match("[0, 0, 10, 5]", "[0, 0, 10, 10]") == 0.0  # IoU 0.5
    assert grounding_match("[0.0, 0.0, 0.5, 0.5]", "[0, 0, 10, 10]") == 0.0
    assert grounding_match("nothing", "[0.1, 0.1, 0.2, 0.2]") == 0.0
    assert grounding_match("Top left", "top left") == 1.0  # no box: exact match


def test_choice_parsing():
    assert parse_choice("B") == "B"
    assert parse_choice("(C) a red bar") == "C"
    assert parse_choice("D. blue") == "D"
    assert parse_choice("The answer is (A).") == "A"
    assert parse_choice("a dog") is None
    assert choice_match("b) dog", "B") == 0.0  # lower case only as the whole text
    assert choice_match("(b)", "B") == 1.0
    assert choice_match("b", "B") == 1.0
    assert choice_match("red", "red") == 1.0  # not a letter: exact match


def test_score_dispatches_corpus_metrics():
    assert score("cider", ["a b", "c e"], ["a b", "c d"]) == pytest.approx(312.5)
    assert (
        score("iou", ["[0, 0, 10, 6]", "x"], ["[0, 0, 10, 10]", "[1, 1, 2, 2]"]) == 50
    )
    with pytest.raises(ValueError, match="unknown metric"):
        score("bleu", ["a"], ["a"])


def test_metric_table_and_declared_task(tmp_path):
    assert METRIC_TABLE["DVQA"] == ("chart", "substring")
    assert METRIC_TABLE["Grounding"] == ("general", "iou")
    assert get_task("ImageNet-R").name == "imagenet-r"
    assert "cider" in get_task("flickr30k").extra_metrics
    with pytest.raises(ValueError, match="task.json"):
        get_task("my-data", tmp_path)
    (tmp_path / "my-data").mkdir()
    (tmp_path / "my-data/task.json").write_text('{"metric": "iou"}')
    assert get_task("my-data", tmp_path).metric == "iou"
    (tmp_path / "my-data/task.json").write_text('{"metric": "bleu"}')
    with pytest.raises(ValueError, match="metric='bleu'"):
        get_task("my-data", tmp_path)
