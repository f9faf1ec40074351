"""The method table: a method added in one file, outside the package, runs."""

import json

import pytest
from example_fedprox import FedProx

from fcit_flower.config import ConfigError
from fcit_flower.inprocess import run_inprocess
from fcit_flower.methods.registry import get_method, method_names, register

TINY = {
    "num-clients": 3,
    "clients-per-round": 2,
    "rounds-per-stage": 1,
    "num-stages": 2,
    "train-size": 18,
    "test-size": 4,
}


def test_every_builtin_method_is_registered_under_its_name():
    names = method_names()
    expected = {"finetune", "disco", "zeroshot", "ewc", "olora", "mlora", "moelora"}
    assert expected | {"mtl"} <= set(names)
    assert all(get_method(n).name == n for n in names)


def test_a_method_from_outside_the_package_runs_through_the_grid(tmp_path):
    config = {**TINY, "method": "fedprox", "results-dir": str(tmp_path)}
    run_inprocess({**config, "run-name": "prox"})
    metrics = json.loads((tmp_path / "prox" / "metrics.json").read_text())
    assert metrics["complete"] and len(metrics["accuracy_matrix"]) == 2
    assert metrics["rejected_uploads"] == []
    extra = json.loads((tmp_path / "prox" / "fedprox.json").read_text())
    assert extra == {"mu": 0.01, "rounds": 2}


def test_methods_by_import_path_and_name_clashes():
    assert isinstance(get_method("example_fedprox.FedProx"), FedProx)
    with pytest.raises(ConfigError, match="example_fedprox.Nothing"):
        get_method("example_fedprox.Nothing")

    class Impostor(FedProx):
        pass

    with pytest.raises(ValueError, match="taken by FedProx"):
        register(Impostor())
