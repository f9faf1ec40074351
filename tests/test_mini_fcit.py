import filecmp
import json
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from fcit_flower.tasks.catalog import CAPABILITY_GROUPS, TASK_ORDER, TASKS, get_task
from fcit_flower.tasks.fcit_data import load_split
from fcit_flower.tasks.mini_fcit import (
    build_mini_fcit,
    generators,
    pretraining_hashes,
)
from fcit_flower.tasks.mini_fcit.pixels import file_pixel_hash
from fcit_flower.tasks.mini_fcit.pretrain import CORPUS_SEED
from fcit_flower.tasks.mini_fcit.tasks import TASK_SPECS

SMALL = {"seed": 0, "train_size": 12, "val_size": 3, "test_size": 4}
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("a") / "mini"
    return build_mini_fcit(root, **SMALL)


def _records(root, task, split):
    return json.loads((root / task / f"{split}.json").read_text())


def test_deterministic_bytes(built, tmp_path):
    again = build_mini_fcit(tmp_path / "mini", **SMALL)
    compare = filecmp.dircmp(built, again)
    assert not compare.diff_files and not compare.left_only and not compare.right_only
    for task in TASKS:
        for split in SPLITS:
            assert (built / task / f"{split}.json").read_bytes() == (
                again / task / f"{split}.json"
            ).read_bytes()
    some_image = _records(built, "ocr-vqa", "train")[0]["image"]
    assert (built / some_image).read_bytes() == (again / some_image).read_bytes()


def test_other_seed_other_data(built, tmp_path):
    other = build_mini_fcit(tmp_path / "mini", **{**SMALL, "seed": 1})
    assert (built / "iconqa" / "train.json").read_text() != (
        other / "iconqa" / "train.json"
    ).read_text()


def test_test_sets_do_not_depend_on_the_train_size(built, tmp_path):
    bigger = build_mini_fcit(tmp_path / "mini", **{**SMALL, "train_size": 20})
    for task in TASKS:
        assert _records(built, task, "test") == _records(bigger, task, "test")


def test_fcit_format_and_images(built):
    for task in TASKS:
        train = _records(built, task, "train")
        assert len(train) == 12
        assert len(_records(built, task, "val")) == 3
        test = _records(built, task, "test")
        assert len(test) == 4
        record = train[0]
        assert set(record) == {"id", "image", "conversations"}
        assert record["conversations"][0]["from"] == "human"
        assert record["conversations"][0]["value"].startswith("<image>\n")
        assert record["conversations"][1]["from"] == "gpt"
        assert set(test[0]) == {"question_id", "image", "text", "answer", "phrasing"}
        with Image.open(built / record["image"]) as image:
            assert image.size == (32, 32) and image.mode == "RGB"


def _template_pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{[a-z]+\}", template)
    return re.compile("^" + "(.+)".join(re.escape(p) for p in parts), re.DOTALL)


def test_heldout_phrasings_never_in_training(built):
    for task, spec in TASK_SPECS.items():
        heldout = [
            _template_pattern(t) for p in spec.phrasings.values() for t in p.heldout
        ]
        seen = [_template_pattern(t) for p in spec.phrasings.values() for t in p.train]
        for sample in load_split(built, task, "train"):
            assert not any(p.match(sample.question) for p in heldout), sample.question
        for split in ("val", "test"):
            for sample in load_split(built, task, split):
                patterns = heldout if sample.phrasing == "heldout" else seen
                assert sample.phrasing in ("train", "heldout")
                assert any(p.match(sample.question) for p in patterns), sample.question


def test_no_image_is_shared_across_splits_or_with_pretraining():
    """Pixel hashes of the default-size build: train, val, test and the base's
    pre-training images are pairwise disjoint."""
    from fcit_flower.cache import default_cache_dir
    from fcit_flower.config import RunConfig
    from fcit_flower.tasks.data import data_root

    root = data_root(RunConfig())
    assert root.is_relative_to(default_cache_dir())
    hashes: dict[str, set[str]] = {split: set() for split in SPLITS}
    for task in TASKS:
        for split in SPLITS:
            for record in _records(root, task, split):
                digest = file_pixel_hash(root / record["image"])
                assert all(digest not in hashes[s] for s in SPLITS), (task, split)
                hashes[split].add(digest)
    assert len(hashes["test"]) == 50 * len(TASKS)
    pretraining = pretraining_hashes(CORPUS_SEED, 32)
    for split in SPLITS:
        assert not hashes[split] & pretraining, split


@pytest.mark.parametrize("task", [t for t, spec in TASK_SPECS.items() if spec.answers])
def test_uniform_answer_spaces_are_balanced_in_val_and_test(task):
    from fcit_flower.config import RunConfig
    from fcit_flower.tasks.data import data_root

    spec = TASK_SPECS[task]
    rng = np.random.default_rng(5)
    drawn = Counter(spec.generate(rng, 32, "train")[3] for _ in range(2000))
    # the declared space is the generator's, and it is drawn about uniformly
    assert set(drawn) == set(spec.answers)
    mean = 2000 / len(spec.answers)
    assert all(abs(n - mean) < 5 * mean**0.5 for n in drawn.values()), drawn
    root = data_root(RunConfig())
    for split in ("val", "test"):
        counts = Counter(r["answer"] for r in _records(root, task, split))
        assert max(counts.values()) - min(counts.values()) <= 1, (split, counts)
        assert set(counts) <= set(spec.answers)
    stats = json.loads((root / "stats.json").read_text())[task]
    assert stats["majority"] <= 100 * (-(-50 // len(spec.answers))) / 50


def test_statistics(built):
    stats = json.loads((built / "stats.json").read_text())
    assert set(stats) == set(TASKS)
    for task, row in stats.items():
        assert row["metric"] == TASKS[task].metric
        assert 0.0 <= row["majority"] <= 100.0
        assert 0.0 <= row["chance"] < 100.0
        assert row["distinct_answers"] >= 2


def test_answers_not_degenerate(tmp_path):
    root = build_mini_fcit(tmp_path / "m", **{**SMALL, "train_size": 60})
    for task in TASKS:
        answers = {s.answer for s in load_split(root, task, "train")}
        assert len(answers) >= 2, task


def test_cached_build_returns_immediately(built):
    marker = (built / ".complete").stat().st_mtime_ns
    build_mini_fcit(built, **SMALL)
    assert (built / ".complete").stat().st_mtime_ns == marker


def test_catalog():
    assert len(TASKS) == 12 and len(TASK_ORDER) == 8
    assert sorted(t for g in CAPABILITY_GROUPS.values() for t in g) == sorted(TASKS)
    assert set(TASK_SPECS) == set(TASKS)
    with pytest.raises(ValueError, match="unknown task 'mnist'"):
        get_task("mnist")


def test_bpe_tokenizer_encodes_any_text():
    from fcit_flower.models.tiny import BpeTokenizer

    tokenizer = BpeTokenizer.train(["what color is the circle?", "red"], 300)
    unseen = "Quelle est la capitale? Zürich, 42 km — naïve café"
    ids = tokenizer.encode(unseen)
    assert tokenizer.unk_id not in ids
    assert tokenizer.decode(ids) == unseen.lower()


def test_iconqa_pictures_hold_the_counted_icons_and_at_most_one_other(monkeypatch):
    drawn = []
    real_scene = generators.scene

    def recording_scene(rng, size, objects):
        drawn.append(list(objects))
        return real_scene(rng, size, objects)

    monkeypatch.setattr(generators, "scene", recording_scene)
    rng = np.random.default_rng(0)
    others_seen = Counter()
    for _ in range(200):
        _, kind, fields, answer = generators.iconqa(rng, 32, "train")
        objects = drawn[-1]
        counted = [s for _, s in objects if generators.PLURALS[s] == fields["plural"]]
        others = len(objects) - len(counted)
        assert kind == "count" and int(answer) == len(counted)
        assert 1 <= len(counted) <= 6 and others <= 1
        others_seen[others] += 1
    assert set(others_seen) == {0, 1}  # both kinds of picture occur
