import filecmp
import json

import pytest
from PIL import Image

from fcit_flower.tasks.catalog import CAPABILITY_GROUPS, TASK_ORDER, TASKS, get_task
from fcit_flower.tasks.fcit_data import load_split
from fcit_flower.tasks.mini_fcit import build_mini_fcit, vocabulary_texts


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("a") / "mini"
    return build_mini_fcit(root, seed=0, train_size=12, test_size=4)


def test_deterministic_bytes(built, tmp_path):
    again = build_mini_fcit(tmp_path / "mini", seed=0, train_size=12, test_size=4)
    compare = filecmp.dircmp(built, again)
    assert not compare.diff_files and not compare.left_only and not compare.right_only
    for task in TASKS:
        for split in ("train", "test"):
            assert (built / task / f"{split}.json").read_bytes() == (
                again / task / f"{split}.json"
            ).read_bytes()
    some_image = json.loads((built / "ocr-vqa" / "train.json").read_text())[0]["image"]
    assert (built / some_image).read_bytes() == (again / some_image).read_bytes()


def test_other_seed_other_data(built, tmp_path):
    other = build_mini_fcit(tmp_path / "mini", seed=1, train_size=12, test_size=4)
    assert (built / "iconqa" / "train.json").read_text() != (
        other / "iconqa" / "train.json"
    ).read_text()


def test_fcit_format_and_images(built):
    for task in TASKS:
        train = json.loads((built / task / "train.json").read_text())
        test = json.loads((built / task / "test.json").read_text())
        assert len(train) == 12 and len(test) == 4
        record = train[0]
        assert set(record) == {"id", "image", "conversations"}
        assert record["conversations"][0]["from"] == "human"
        assert record["conversations"][0]["value"].startswith("<image>\n")
        assert record["conversations"][1]["from"] == "gpt"
        assert set(test[0]) == {"question_id", "image", "text", "answer"}
        with Image.open(built / record["image"]) as image:
            assert image.size == (32, 32) and image.mode == "RGB"


def test_train_and_test_images_disjoint(built):
    for task in TASKS:
        train = {
            r["image"] for r in json.loads((built / task / "train.json").read_text())
        }
        test = {
            r["image"] for r in json.loads((built / task / "test.json").read_text())
        }
        assert not train & test, task


def test_answers_not_degenerate(tmp_path):
    root = build_mini_fcit(tmp_path / "m", seed=0, train_size=60, test_size=4)
    for task in TASKS:
        answers = {s.answer for s in load_split(root, task, "train")}
        assert len(answers) >= 2, task


def test_shared_images_differ_only_in_instruction(built):
    dots = load_split(built, "iconqa", "train")
    plus = load_split(built, "clevr-math", "train")
    assert [s.image for s in dots] == [s.image for s in plus]
    assert all(
        int(p.answer) == int(d.answer) + 1 for d, p in zip(dots, plus, strict=True)
    )


def test_cached_build_returns_immediately(built):
    marker = (built / ".complete").stat().st_mtime_ns
    build_mini_fcit(built, seed=0, train_size=12, test_size=4)
    assert (built / ".complete").stat().st_mtime_ns == marker


def test_catalog():
    assert len(TASKS) == 12 and len(TASK_ORDER) == 8
    assert sorted(t for g in CAPABILITY_GROUPS.values() for t in g) == sorted(TASKS)
    with pytest.raises(ValueError, match="unknown task 'mnist'"):
        get_task("mnist")


def test_vocabulary_covers_every_text(built):
    from fcit_flower.models.tiny import WordTokenizer

    tokenizer = WordTokenizer.train(vocabulary_texts())
    for task in TASKS:
        for sample in load_split(built, task, "train"):
            ids = tokenizer.encode(f"{sample.question} {sample.answer}")
            assert tokenizer.unk_id not in ids, (task, sample.question)
