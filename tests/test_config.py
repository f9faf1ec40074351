import tomllib
from pathlib import Path

import pytest

from fcit_flower.cli import parse_overrides
from fcit_flower.config import ConfigError, RunConfig
from fcit_flower.methods.registry import get_method


def test_defaults_match_pyproject():
    pyproject = tomllib.loads(Path("pyproject.toml").read_text())
    table = pyproject["tool"]["flwr"]["app"]["config"]
    assert RunConfig.from_mapping(table) == RunConfig()
    assert set(table) == set(RunConfig().to_mapping())


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"method": "two words"}, "method='two words' is not a name"),
        ({"scenario": "mixed"}, "scenario"),
        ({"setting": "domain"}, "setting"),
        ({"beta": 0}, "beta=0.0 must be > 0"),
        ({"beta": -1.0}, "beta"),
        ({"clients-per-round": 11}, "exceeds num-clients=10"),
        ({"data-root": "/no/such/dir"}, "data-root='/no/such/dir'"),
        ({"num-clients": "ten"}, "must be an integer"),
        ({"lora-rank": 30}, "divisible by num-subspaces"),
        ({"tau": 2.0}, "tau"),
        ({"server-optimizer": "sgd"}, "server-optimizer='sgd' is not allowed"),
        ({"server-optimizer-state": "forget"}, "server-optimizer-state"),
        ({"no-such-key": 1}, "unknown run-config key 'no-such-key'"),
        ({"train-projector": "maybe"}, "true or false"),
        ({"max-update-norm": float("nan")}, "max-update-norm=nan must be a finite"),
        ({"max-token-norm": "inf"}, "max-token-norm=inf must be a finite"),
        ({"max-update-norm": -1.0}, "max-update-norm=-1.0 must be >= 0"),
        ({"beta": float("inf")}, "beta=inf must be a finite"),
        ({"round-timeout": "-inf"}, "round-timeout=-inf must be a finite"),
        ({"seed": -1}, "seed=-1 must be >= 0"),
        ({"data-seed": -3}, "data-seed=-3 must be >= 0"),
        ({"fault-seed": -1}, "fault-seed=-1 must be >= 0"),
        ({"lr": True}, "lr=True must be a number"),
        ({"num-clients": 10**400}, "must be an integer"),
        ({"num-clients": "inf"}, "must be an integer"),
    ],
)
def test_bad_values_name_the_key(values, fragment):
    with pytest.raises(ConfigError, match=None) as error:
        RunConfig.from_mapping(values)
    assert fragment in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_method_is_refused_by_the_method_table():
    config = RunConfig.from_mapping({"method": "sgd"})  # checked once apps start
    with pytest.raises(ConfigError, match="method='sgd' is not allowed") as error:
        get_method(config.method)
    assert "'disco'" in str(error.value) and "\n" not in str(error.value)


def test_derived_values():
    config = RunConfig.from_mapping(
        {"lora-rank": 64, "num-subspaces": 8, "lora-alpha": 128}
    )
    assert config.subspace_rank == 8
    assert config.lora_scaling == 2.0
    assert config.resolved_run_name == "finetune-hom-task-b1-s0"


def test_parse_overrides():
    assert parse_overrides("method='disco' beta=0.5 seed=2 train-projector=false") == {
        "method": "disco",
        "beta": 0.5,
        "seed": 2,
        "train-projector": False,
    }
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides("oops")


FLOAT_KEYS = [
    key for key, value in RunConfig().to_mapping().items() if isinstance(value, float)
]


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), "-inf", "NaN"])
def test_every_float_key_refuses_non_finite_values(key, value):
    with pytest.raises(ConfigError, match=f"^{key}=.* must be a finite number$"):
        RunConfig.from_mapping({key: value})


def test_non_finite_value_set_in_code_is_refused_too():
    with pytest.raises(ConfigError, match="max-update-norm=nan"):
        RunConfig().replace(max_update_norm=float("nan"))


def test_zero_guard_thresholds_are_allowed_as_off():
    config = RunConfig.from_mapping({"max-update-norm": 0, "max-token-norm": 0.0})
    assert config.max_update_norm == 0.0 and config.max_token_norm == 0.0
