import json

import pytest
from PIL import Image

from fcit_flower.tasks.fcit_data import DataError, load_split


def _image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path)


def _train(n, image="img/a.png"):
    return [
        {
            "id": str(i),
            "image": image,
            "conversations": [
                {"from": "human", "value": "<image>\nWhat is it?"},
                {"from": "gpt", "value": "cat"},
            ],
        }
        for i in range(n)
    ]


@pytest.fixture
def simple(tmp_path):
    _image(tmp_path / "img/a.png")
    (tmp_path / "ocr-vqa").mkdir()
    (tmp_path / "ocr-vqa/train.json").write_text(json.dumps(_train(3)))
    (tmp_path / "ocr-vqa/test.json").write_text(
        "\n".join(
            json.dumps(
                {
                    "question_id": i,
                    "image": "img/a.png",
                    "text": "What?",
                    "answer": "dog",
                }
            )
            for i in range(2)
        )
    )
    return tmp_path


def test_simple_layout_train_and_jsonl_test(simple):
    train = load_split(simple, "ocr-vqa", "train")
    assert [s.question for s in train] == ["What is it?"] * 3
    assert train[0].answer == "cat" and train[0].image.is_absolute()
    test = load_split(simple, "ocr-vqa", "test")
    assert [s.answer for s in test] == ["dog", "dog"]


def test_released_layout(tmp_path):
    _image(tmp_path / "datasets/IconQA/x.png")
    folder = tmp_path / "instructions/IconQA"
    folder.mkdir(parents=True)
    (folder / "train.json").write_text(json.dumps(_train(2, "IconQA/x.png")))
    (folder / "val.json").write_text(
        json.dumps(
            [
                {
                    "question_id": "q",
                    "image": "IconQA/x.png",
                    "text": "<image>\nHow many?",
                    "answer": "3",
                }
            ]
        )
    )
    assert len(load_split(tmp_path, "iconqa", "train")) == 2
    test = load_split(tmp_path, "iconqa", "test")
    assert test[0].question == "How many?" and test[0].answer == "3"


def test_missing_task_names_paths(tmp_path):
    with pytest.raises(
        DataError, match=r"ocr-vqa: no train file; looked for .*ocr-vqa/train.json"
    ):
        load_split(tmp_path, "ocr-vqa", "train")


def test_malformed_json_names_line(simple):
    good = json.dumps(
        {"question_id": 1, "image": "img/a.png", "text": "q", "answer": "a"}
    )
    (simple / "ocr-vqa/test.json").write_text(f"{good}\n{{oops\n")
    with pytest.raises(
        DataError, match="test.json: record 1: malformed JSON line 2.*1 of 2"
    ):
        load_split(simple, "ocr-vqa", "test")
    (simple / "ocr-vqa/test.json").write_text(f"{good}\n" * 39 + "{oops\n")
    assert len(load_split(simple, "ocr-vqa", "test")) == 39  # 1 of 40 <= 5 %


def test_malformed_json_list_names_file(simple):
    (simple / "ocr-vqa/train.json").write_text('[{"id": 1},')
    with pytest.raises(DataError, match="train.json: malformed JSON at line 1"):
        load_split(simple, "ocr-vqa", "train")


def test_fcit_folder_names_and_image_root(tmp_path):
    _image(tmp_path / "pics/img/a.png")
    (tmp_path / "data/ImageNet-R").mkdir(parents=True)
    (tmp_path / "data/ImageNet-R/train.json").write_text(json.dumps(_train(2)))
    samples = load_split(
        tmp_path / "data", "imagenet-r", "train", image_root=tmp_path / "pics"
    )
    assert samples[0].image == (tmp_path / "pics/img/a.png").resolve()


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda r: r.pop("image"), "missing field 'image'"),
        (lambda r: r.update(image="img/none.png"), "does not exist"),
        (lambda r: r.pop("conversations"), "'conversations'"),
    ],
)
def test_bad_record_over_threshold_names_file_record_field(simple, mutate, fragment):
    records = _train(3)
    mutate(records[1])
    (simple / "ocr-vqa/train.json").write_text(json.dumps(records))
    with pytest.raises(DataError) as error:
        load_split(simple, "ocr-vqa", "train")
    assert "train.json: record 1" in str(error.value) and fragment in str(error.value)


def test_few_bad_records_are_skipped(simple):
    records = _train(200)
    records[5].pop("conversations")
    (simple / "ocr-vqa/train.json").write_text(json.dumps(records))
    assert len(load_split(simple, "ocr-vqa", "train")) == 199


def test_missing_answer_in_test(simple):
    (simple / "ocr-vqa/test.json").write_text(
        json.dumps([{"question_id": 1, "image": "img/a.png", "text": "q"}])
    )
    with pytest.raises(DataError, match="missing field 'answer'"):
        load_split(simple, "ocr-vqa", "test")
