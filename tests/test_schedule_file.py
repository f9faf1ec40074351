import json

import pytest

from fcit_flower.config import ConfigError, RunConfig
from fcit_flower.tasks.catalog import get_task
from fcit_flower.tasks.schedule import describe, from_table, make_schedule
from fcit_flower.tasks.schedule_file import ScheduleFileError, read_schedule_file

TOML = """
[[stage]]
tasks = ["ImageNet-R"]

[[stage]]
[[stage.group]]
tasks = ["arxivqa"]
clients = [0, "1-2"]
[[stage.group]]
tasks = ["iconqa", "clevr-math"]
clients = "rest"
"""


def _resolve(name):
    return get_task(name).name


def test_toml_schedule_groups_and_rest(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(TOML)
    schedule = from_table(read_schedule_file(path, 5, _resolve))
    assert schedule.num_stages == 2
    assert schedule.assignments[0] == (("imagenet-r",),) * 5
    assert schedule.assignments[1][:3] == (("arxivqa",),) * 3
    assert schedule.assignments[1][3:] == (("iconqa", "clevr-math"),) * 2
    assert schedule.tasks == ("imagenet-r", "arxivqa", "iconqa", "clevr-math")
    assert schedule.seen_columns() == [[0], [0, 1, 2, 3]]
    assert "iconqa+clevr-math <- clients [3, 4]" in describe(schedule)


def test_json_schedule_through_run_config(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"stage": [{"tasks": ["dvqa"]}, {"tasks": ["tabmwp"]}]}))
    config = RunConfig(num_clients=3, schedule_file=str(path), num_stages=1)
    schedule = make_schedule(config)
    assert schedule.assignments == ((("dvqa",),) * 3,)
    assert schedule.tasks == ("dvqa",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[stage]]\ntasks = ['mnist']", "stage 1: 'tasks': unknown task 'mnist'"),
        ("stage = []", "non-empty list 'stage'"),
        ("[[stage]]\ntasks = 'dvqa'", "stage 1: 'tasks' must be a non-empty list"),
        (
            "[[stage]]\ntasks=['dvqa']\n[[stage]]\ntasks=['dvqa']\nclients=[1]",
            "stage 2: give either 'tasks' or 'group'",
        ),
        (
            "[[stage]]\n[[stage.group]]\ntasks=['dvqa']\nclients=[0, 9]",
            "stage 1: group 1: 'clients': 9 is out of range 0..3",
        ),
        (
            "[[stage]]\n[[stage.group]]\ntasks=['dvqa']\nclients=[0, 1]",
            "stage 1: clients [2, 3] learn nothing",
        ),
        (
            "[[stage]]\n[[stage.group]]\ntasks=['dvqa']\nclients=['0-2']\n"
            "[[stage.group]]\ntasks=['aokvqa']\nclients=[2, 3]",
            "stage 1: group 2: 'clients': client 2 is already assigned",
        ),
        ("[[stage]\n", "malformed toml"),
    ],
)
def test_bad_files_name_file_stage_and_field(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScheduleFileError) as error:
        read_schedule_file(path, 4, _resolve)
    assert str(path) in str(error.value)
    assert message in str(error.value)


def test_config_rejects_missing_or_wrong_schedule_file(tmp_path):
    with pytest.raises(ConfigError, match="schedule-file"):
        RunConfig.from_mapping({"schedule-file": str(tmp_path / "none.toml")})
    (tmp_path / "s.yaml").write_text("")
    with pytest.raises(ConfigError, match=r"\.toml or \.json"):
        RunConfig.from_mapping({"schedule-file": str(tmp_path / "s.yaml")})


@pytest.mark.parametrize(
    "name, data, message",
    [
        (
            "latin1.toml",
            "[[stage]]\ntasks = ['caf\xe9']\n".encode("latin-1"),
            "not UTF-8",
        ),
        ("deep.json", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_unreadable_schedule_file_is_named(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ScheduleFileError) as error:
        read_schedule_file(path, 4, _resolve)
    assert str(error.value).startswith(f"{path}: {message}")
    assert "\n" not in str(error.value)


def test_non_utf8_task_declaration_is_named(tmp_path):
    (tmp_path / "mytask").mkdir()
    (tmp_path / "mytask/task.json").write_bytes(b'{"metric": "\xff"}')
    with pytest.raises(ValueError, match=r"mytask/task.json: not readable JSON"):
        get_task("mytask", tmp_path)
