"""Seeded fuzzing of run-config values and FCIT records: a clean error, never a crash.

Every generated input must end either in a valid result or in the project's own
one-line error (:class:`ConfigError`, :class:`DataError`); any other exception (a
traceback for the user) fails the test and prints the seed and input to replay.
The whole module runs in well under a minute.
"""

import json
import math
import random
from pathlib import Path

import pytest
from PIL import Image

from fcit_flower.config import ConfigError, RunConfig
from fcit_flower.launch.plan import parse_overrides
from fcit_flower.tasks.fcit_data import DataError, load_split
from fcit_flower.tasks.record_checks import MAX_TEXT_CHARS

SEED = 20240616
KEYS = sorted(RunConfig().to_mapping())


def _value(rng: random.Random):
    """One run-config value from the kinds careless and hostile users write."""
    pools = [
        lambda: rng.choice([math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324]),
        lambda: rng.uniform(-10, 10),
        lambda: rng.choice([0, 1, -1, 2, 7, 10**20, -(10**20), 10**400]),
        lambda: rng.choice(["", "nan", "inf", "-inf", "1e999", "abc", "0", "-1"]),
        lambda: rng.choice(["true", "False", "hom", "het", "task", "fedyogi"]),
        lambda: rng.choice(["x" * 5000, "ünïcödé", "a\x00b", "../..", "two words"]),
        lambda: rng.choice([True, False, None, [], {}, [1], {"a": 1}]),
    ]
    return rng.choice(pools)()


def _one_line_error(error: BaseException) -> None:
    assert str(error) and "\n" not in str(error), repr(error)


def test_fuzzed_run_configs_are_valid_or_one_line_errors():
    rng = random.Random(SEED)
    for case in range(3000):
        keys = rng.sample(KEYS, rng.randint(1, 3))
        if rng.random() < 0.05:
            keys.append(rng.choice(["no-such-key", "", "lr ", "LR"]))
        values = {key: _value(rng) for key in keys if key != "device"}
        try:
            config = RunConfig.from_mapping(values)
        except ConfigError as error:
            _one_line_error(error)
            continue
        except Exception as error:  # noqa: BLE001 - the point of the test
            pytest.fail(f"case {case}: {values!r} raised {error!r}")
        for key, value in config.to_mapping().items():
            if isinstance(value, float):
                assert math.isfinite(value), (case, key, value)
        for key in ("seed", "data-seed", "fault-seed", "max-update-norm"):
            assert config.to_mapping()[key] >= 0, (case, key)


def test_fuzzed_override_strings_parse_or_fail_in_one_line():
    rng = random.Random(SEED + 1)
    alphabet = "ab=- '\"\t1.eE+nai\u00e9\x00,"
    for case in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        try:
            parsed = parse_overrides(text)
            RunConfig.from_mapping(parsed)
        except ConfigError as error:
            _one_line_error(error)
        except Exception as error:  # noqa: BLE001
            pytest.fail(f"case {case}: {text!r} raised {error!r}")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Image names under a root: decodable ones and every kind of bad one."""
    root = tmp_path_factory.mktemp("fuzz-root")
    (root / "img").mkdir()
    Image.new("RGB", (6, 6), (1, 2, 3)).save(root / "img/good.png")
    Image.new("L", (5, 7)).save(root / "img/good.jpg")
    (root / "img/bad.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00junk")
    data = (root / "img/good.png").read_bytes()
    (root / "img/short.png").write_bytes(data[: len(data) // 2])
    (root / "img/text.png").write_text("not an image")
    (root / "img/folder.png").mkdir()
    good = ["img/good.png", "img/good.jpg"]
    bad = ["img/bad.png", "img/short.png", "img/text.png", "img/folder.png"]
    return root, good, bad + ["img/none.png", "", "img/\x00.png"]


BAD_TEXT = [
    "",
    "   ",
    None,
    7,
    3.5,
    ["a"],
    {"v": 1},
    "q" * (MAX_TEXT_CHARS + 1),
]


def _record(rng: random.Random, split: str, good: list[str], bad: list[str]):
    """A good record, or (one time in three) one with a single spoiled field."""
    text = rng.choice(["What is shown?", "<image>\nHow many?", "y" * MAX_TEXT_CHARS])
    if split == "train":
        record = {
            "id": rng.choice(["1", 2, None]),
            "image": rng.choice(good),
            "conversations": [
                {"from": "human", "value": text},
                {"from": "gpt", "value": "red"},
            ],
        }
    else:
        record = {
            "question_id": rng.randint(0, 9),
            "image": rng.choice(good),
            "text": text,
            "answer": "3",
            "phrasing": rng.choice(["train", "heldout", None, [], "x"]),
        }
    if rng.random() < 2 / 3:
        return record
    spoil = rng.randrange(5)
    if spoil == 0:
        record["image"] = rng.choice([*bad, None, 3, ["x"]])
    elif spoil == 1:
        del record[rng.choice(sorted(record))]
    elif spoil == 2 and split == "train":
        turn = rng.randrange(2)
        record["conversations"][turn]["value"] = rng.choice(BAD_TEXT)
        if rng.random() < 0.3:
            record["conversations"] = rng.choice([[], None, "text", [1, 2], [{}, {}]])
    elif spoil == 2:
        record[rng.choice(["text", "answer"])] = rng.choice(BAD_TEXT)
    elif spoil == 3:
        return rng.choice([None, [], "str", 5])
    else:
        record["image"] = "\ud800.png"  # a lone surrogate: no file can have it
    return record


def _file_bytes(rng: random.Random, records: list) -> bytes:
    if rng.random() < 0.5:
        text = json.dumps(records, ensure_ascii=rng.random() < 0.5)
    else:
        lines = [json.dumps(r) for r in records]
        if rng.random() < 0.3:
            lines.insert(rng.randint(0, len(lines)), rng.choice(["{oops", "[", "nul"]))
        text = "\n".join(lines)
    data = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.05:  # a Latin-1 byte somewhere: not UTF-8
        at = rng.randint(0, len(data))
        data = data[:at] + b"\xe9" + data[at:]
    return data


def test_fuzzed_records_are_samples_or_bad_records_never_crashes(images):
    root, good, bad = images
    rng = random.Random(SEED + 2)
    (root / "ocr-vqa").mkdir()
    outcomes = {"loaded": 0, "refused": 0}
    for case in range(400):
        split = rng.choice(["train", "test"])
        records = [_record(rng, split, good, bad) for _ in range(rng.randint(0, 12))]
        path = root / "ocr-vqa" / f"{split}.json"
        for old in (root / "ocr-vqa").iterdir():
            old.unlink()
        path.write_bytes(_file_bytes(rng, records))
        fraction = rng.choice([0.0, 0.05, 0.5, 0.99])
        try:
            samples = load_split(root, "ocr-vqa", split, max_bad_fraction=fraction)
        except DataError as error:
            _one_line_error(error)
            outcomes["refused"] += 1
            continue
        except Exception as error:  # noqa: BLE001
            pytest.fail(f"case {case}: {split} {records!r} raised {error!r}")
        outcomes["loaded"] += 1
        assert 0 < len(samples) <= len(records)
        for sample in samples:
            # only the generator's good texts: no null or number turned into "None"
            assert sample.question in (
                "What is shown?",
                "How many?",
                "y" * MAX_TEXT_CHARS,
            )
            assert sample.answer in ("red", "3")
            assert sample.image in {(root / g).resolve() for g in good}
            assert Path(sample.image).is_file()
    # both outcomes were exercised (the generator is not degenerate)
    assert outcomes["loaded"] > 20 and outcomes["refused"] > 20, outcomes
