"""GPU requests without a visible GPU fail early; base models load once per process."""

import pytest
import torch

from fcit_flower.config import ConfigError
from fcit_flower.launch import simulation
from fcit_flower.models.adapters import adapted_model, load_base
from fcit_flower.models.llava import LoadOptions
from fcit_flower.models.llava_checkpoint import write_llava_checkpoint
from fcit_flower.tasks.mini_fcit import vocabulary_texts

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")


@no_gpu
@pytest.mark.parametrize("gpus", [1.0, 0.25])
def test_client_gpus_without_a_gpu_fail_before_starting_flower(
    monkeypatch, tmp_path, gpus
):
    def must_not_start(*args, **kwargs):
        raise AssertionError("the SuperLink started although the run cannot work")

    monkeypatch.setattr(simulation, "start_simulation_superlink", must_not_start)
    with pytest.raises(ConfigError, match="client-resources-num-gpus=.*no CUDA GPU"):
        simulation.run_simulation_app(
            tmp_path, {}, num_supernodes=2, client_num_gpus=gpus
        )


def test_llava_base_and_adapted_model_are_cached_per_process(tmp_path):
    from fcit_flower.models.adapters import register_base

    path = str(write_llava_checkpoint(tmp_path / "ckpt", vocabulary_texts()[:50]))
    register_base(path, LoadOptions(model="llava"))
    assert load_base(path) is load_base(path)
    assert adapted_model(path, 4, 2.0, 0.0) is adapted_model(path, 4, 2.0, 0.0)
    with pytest.raises(ValueError, match="already loaded with"):
        register_base(path, LoadOptions(model="llava", torch_dtype="bfloat16"))
