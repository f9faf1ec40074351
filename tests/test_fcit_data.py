import json

import pytest
from PIL import Image

from fcit_flower.tasks.fcit_data import DataError, load_split
from fcit_flower.tasks.record_checks import MAX_TEXT_CHARS


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


def _corrupt_png(path):
    path.write_bytes(b"\x89PNG\r\n\x1a\n not really a picture")


def _truncated_png(path):
    Image.new("RGB", (64, 64), (200, 10, 10)).save(path)
    path.write_bytes(path.read_bytes()[:60])


def _directory(path):
    path.mkdir()


def _text_file(path):
    path.write_text("hello, I am text")


@pytest.mark.parametrize(
    "spoil", [_corrupt_png, _truncated_png, _directory, _text_file]
)
@pytest.mark.parametrize("split", ["train", "test"])
def test_an_image_that_does_not_decode_is_a_bad_record(simple, spoil, split):
    spoil(simple / "img/bad.png")
    if split == "train":
        records = _train(3)
        records[2]["image"] = "img/bad.png"
    else:
        records = [
            {"question_id": i, "image": "img/a.png", "text": "q", "answer": "a"}
            for i in range(3)
        ]
        records[2]["image"] = "img/bad.png"
    (simple / f"ocr-vqa/{split}.json").write_text(json.dumps(records))
    with pytest.raises(DataError) as error:
        load_split(simple, "ocr-vqa", split)
    message = str(error.value)
    assert f"{split}.json: record 2: field 'image'" in message
    assert "bad.png" in message and "1 of 3 records bad" in message
    assert "\n" not in message
    # within max-bad-fraction the record is skipped and the rest is kept
    assert len(load_split(simple, "ocr-vqa", split, max_bad_fraction=0.5)) == 2


@pytest.mark.parametrize(
    "value, fragment",
    [
        (None, "field 'answer' is null"),
        (3, "field 'answer' is a int, not a string"),
        (["a"], "field 'answer' is a list"),
        (
            "x" * (MAX_TEXT_CHARS + 1),
            f"field 'answer' has {MAX_TEXT_CHARS + 1} characters, more than the limit",
        ),
    ],
)
def test_null_non_string_or_overlong_answer_is_a_bad_record(simple, value, fragment):
    records = [
        {"question_id": i, "image": "img/a.png", "text": "q", "answer": "a"}
        for i in range(40)
    ]
    records[7]["answer"] = value
    (simple / "ocr-vqa/test.json").write_text(json.dumps(records))
    assert len(load_split(simple, "ocr-vqa", "test")) == 39  # 1 of 40: skipped
    with pytest.raises(DataError, match=f"record 7: {fragment}"):
        load_split(simple, "ocr-vqa", "test", max_bad_fraction=0.0)


@pytest.mark.parametrize("turn", [0, 1])
@pytest.mark.parametrize("value", [None, 7, "q" * (MAX_TEXT_CHARS + 1)])
def test_null_or_overlong_conversation_turn_is_a_bad_record(simple, turn, value):
    records = _train(2)
    records[1]["conversations"][turn]["value"] = value
    (simple / "ocr-vqa/train.json").write_text(json.dumps(records))
    role = ("human", "gpt")[turn]
    with pytest.raises(DataError, match=rf"record 1: field 'conversations\[{role}\]"):
        load_split(simple, "ocr-vqa", "train")


def test_text_at_the_limit_is_kept(simple):
    records = _train(1)
    records[0]["conversations"][1]["value"] = "y" * MAX_TEXT_CHARS
    (simple / "ocr-vqa/train.json").write_text(json.dumps(records))
    assert len(load_split(simple, "ocr-vqa", "train")[0].answer) == MAX_TEXT_CHARS


def test_non_utf8_data_file_is_named(simple):
    (simple / "ocr-vqa/train.json").write_bytes(b'[{"id": "\xff\xfe"}]')
    with pytest.raises(DataError, match=r"train.json: the data file is not UTF-8"):
        load_split(simple, "ocr-vqa", "train")


def test_data_file_that_is_a_directory_is_named(simple):
    (simple / "ocr-vqa/train.json").unlink()
    (simple / "ocr-vqa/train.json").mkdir()
    with pytest.raises(DataError, match=r"train.json: cannot read the data file"):
        load_split(simple, "ocr-vqa", "train")


def test_deeply_nested_json_is_an_error_not_a_crash(simple):
    (simple / "ocr-vqa/train.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match="train.json: JSON nested too deeply"):
        load_split(simple, "ocr-vqa", "train")
