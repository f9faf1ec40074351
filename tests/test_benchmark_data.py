"""Label skew, partition statistics, MTL split, FCIT-layout data end to end."""

import json
import shutil

import pytest
from flwr.app import Context, RecordDict

from fcit_flower.client_app import app as client_app
from fcit_flower.config import RunConfig
from fcit_flower.inprocess import InProcessGrid
from fcit_flower.preflight import check_data
from fcit_flower.runtime import prepare_runtime
from fcit_flower.server_app import main
from fcit_flower.tasks.data import (
    client_samples,
    data_root,
    partition_statistics,
    pooled_client_samples,
)
from fcit_flower.tasks.fcit_data import DataError
from fcit_flower.tasks.partition import answer_summary, label_skew_indices
from fcit_flower.tasks.schedule import make_schedule, mtl_schedule

SMALL = {"train-size": 24, "test-size": 5, "num-clients": 4, "clients-per-round": 2}


def _distinct(parts, answers):
    return sum(len({answers[i] for i in part}) for part in parts) / len(parts)


def test_label_skew_is_seeded_complete_and_skewed():
    answers = [str(i % 6) for i in range(600)]
    parts = label_skew_indices(answers, 5, 0.1, seed=3, min_size=4)
    assert parts == label_skew_indices(answers, 5, 0.1, seed=3, min_size=4)
    assert sorted(i for p in parts for i in p) == list(range(600))
    assert min(len(p) for p in parts) >= 4
    even = label_skew_indices(answers, 5, 100.0, seed=3, min_size=4)
    # Small beta: each client sees fewer distinct answers than with a large beta.
    assert _distinct(parts, answers) < _distinct(even, answers)


def test_label_skew_impossible_minimum_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot give 5 clients at least 4"):
        label_skew_indices(["a"] * 10, 5, 1.0, seed=0, min_size=4)


def test_answer_summary():
    assert answer_summary(["no", "yes", "no"]) == {
        "samples": 3,
        "distinct_answers": 2,
        "top_answers": [["no", 2], ["yes", 1]],
    }


@pytest.mark.parametrize("partition", ["quantity", "label"])
def test_partition_statistics_cover_each_stage(partition):
    config = RunConfig.from_mapping(
        {**SMALL, "num-stages": 2, "partition": partition, "min-client-size": 2}
    )
    schedule = make_schedule(config)
    root = data_root(config)

    def samples(stage, client):
        return client_samples(config, schedule, root, stage, client)

    stats = partition_statistics(config, schedule, samples)
    assert stats == partition_statistics(config, schedule, samples)
    assert [s["stage"] for s in stats["stages"]] == [1, 2]
    first = stats["stages"][0]["clients"]
    assert sum(c["samples"] for c in first) == 24  # hom: the task's data, split
    assert all(c["samples"] >= config.min_client_size for c in first)


def test_mtl_chunks_partition_the_pooled_data():
    config = RunConfig.from_mapping(
        {**SMALL, "num-stages": 2, "method": "mtl", "min-client-size": 2}
    )
    schedule = mtl_schedule(make_schedule(config))
    assert schedule.assignments[0] == schedule.assignments[1]
    assert schedule.client_tasks(0, 0) == ("imagenet-r", "arxivqa")
    root = data_root(config)
    ids = [
        s.id
        for stage in (0, 1)
        for client in range(4)
        for s in pooled_client_samples(config, schedule, root, stage, client)
    ]
    assert len(ids) == len(set(ids)) == 48  # every pooled sample once


def _run(tmp_path, name, **extra):
    config = {**SMALL, "rounds-per-stage": 1, **extra}
    config.update({"results-dir": str(tmp_path), "run-name": name})
    grid = InProcessGrid(client_app, config["num-clients"], config)
    main(
        grid,
        Context(
            run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config
        ),
    )
    return json.loads((tmp_path / name / "metrics.json").read_text())


def test_mtl_run_fills_every_row_and_writes_partitions(tmp_path):
    metrics = _run(tmp_path, "mtl", method="mtl-fed", **{"num-stages": 2})
    rows = metrics["accuracy_matrix"]
    assert len(rows) == 2 and rows[0] == rows[1]
    assert metrics["avg"] == pytest.approx(metrics["last"]) and metrics["bwt"] is None
    partitions = json.loads((tmp_path / "mtl/partitions.json").read_text())
    assert len(partitions["stages"]) == 2
    assert len(partitions["stages"][0]["clients"]) == 4


def _fcit_directory(tmp_path):
    """imagenet-r and arxivqa of mini-FCIT (digits, bars) in the FCIT folder format."""
    source = data_root(RunConfig.from_mapping(SMALL))
    data, pics = tmp_path / "fcit", tmp_path / "pics"
    shutil.copytree(source / "images", pics / "images")
    for task, folder in (("imagenet-r", "ImageNet-R"), ("arxivqa", "ArxivQA")):
        (data / folder).mkdir(parents=True)
        train = json.loads((source / task / "train.json").read_text())
        train.append({"id": "bad", "image": "images/none.png", "conversations": []})
        (data / folder / "train.json").write_text(json.dumps(train))
        test = json.loads((source / task / "test.json").read_text())
        lines = [json.dumps(r) for r in test * 4]  # 20 records, JSON lines
        (data / folder / "test.json").write_text("\n".join(lines) + "\n{oops\n")
    return data, pics


def test_fcit_directory_end_to_end(tmp_path):
    data, pics = _fcit_directory(tmp_path)
    extra = {"data-root": str(data), "image-root": str(pics), "num-stages": 2}
    metrics = _run(tmp_path, "real", **extra)
    assert metrics["complete"] and metrics["tasks"] == ["imagenet-r", "arxivqa"]
    # One bad record in 25 train and 21 test records is skipped (<= 5 %).
    stats = json.loads((tmp_path / "real/partitions.json").read_text())
    assert sum(c["samples"] for c in stats["stages"][0]["clients"]) == 24
    with pytest.raises(DataError, match=r"lacks train/test files of \['iconqa'\]"):
        prepare_runtime(RunConfig.from_mapping({**SMALL, **extra, "num-stages": 3}))
    # The pre-flight check reads every split before launch (the BPE base needs no
    # pass over the data, so loading the runtime does not).
    with pytest.raises(DataError, match="record 24.*max-bad-fraction=0.01"):
        check_data(RunConfig.from_mapping({**SMALL, **extra, "max-bad-fraction": 0.01}))
