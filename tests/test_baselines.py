"""EWC, O-LoRA, M-LoRA and MoELoRA: the defining mechanism of each."""

import numpy as np
import pytest
import torch
from flwr.app import MetricRecord
from torch import nn

from fcit_flower.config import ConfigError, RunConfig
from fcit_flower.methods.ewc import ewc_penalty
from fcit_flower.methods.lora_blocks import (
    block_state,
    freeze_other_blocks,
    load_blocks,
)
from fcit_flower.methods.mlora import merge_into_base, merged_delta
from fcit_flower.methods.olora import olora_regulariser, orthogonality_loss
from fcit_flower.methods.registry import get_method
from fcit_flower.models.adapters import adapted_model, lora_parameters, lora_state
from fcit_flower.models.moe_lora import MoeLoraLinear
from fcit_flower.models.subspace_lora import SubspaceLoraLinear, set_activation
from fcit_flower.paper import PAPER_RESULTS, paper_table
from fcit_flower.protocol import split_ewc
from fcit_flower.runtime import prepare_runtime
from fcit_flower.strategies.blocks import BlockLora
from fcit_flower.strategies.continual import Federation
from fcit_flower.strategies.ewc import Ewc
from fcit_flower.strategies.server_optim import ServerOptimizerSpec
from fcit_flower.strategies.uploads import RoundPolicy, Upload

# --- EWC -------------------------------------------------------------------------


def test_ewc_penalty_is_zero_at_anchor_and_grows_with_fisher_weighted_distance():
    anchor = {"a": torch.tensor([1.0, -2.0]), "b": torch.tensor([0.5])}
    fisher = {"a": torch.tensor([2.0, 0.0]), "b": torch.tensor([3.0])}
    assert ewc_penalty(dict(anchor), anchor, fisher, 10.0).item() == 0.0

    def moved(d_a0, d_a1, d_b):
        params = {
            "a": anchor["a"] + torch.tensor([d_a0, d_a1]),
            "b": anchor["b"] + torch.tensor([d_b]),
        }
        return ewc_penalty(params, anchor, fisher, 10.0).item()

    assert moved(0.0, 5.0, 0.0) == 0.0  # F = 0: free to move
    assert moved(1.0, 0.0, 0.0) == pytest.approx(10.0 * 2.0 * 1.0)
    assert moved(2.0, 0.0, 0.0) == pytest.approx(4 * moved(1.0, 0.0, 0.0))
    assert moved(0.0, 0.0, 1.0) == pytest.approx(10.0 * 3.0)


def test_ewc_strategy_averages_fisher_by_samples_and_accumulates_it():
    policy = RoundPolicy(clients_per_round=2, seed=0)
    federation = Federation({1: 0, 2: 1}, policy, ServerOptimizerSpec())
    strategy = Ewc(federation=federation, rounds_per_stage=2)
    strategy.current = {"w": np.zeros(2, np.float32)}
    ones = np.ones(2, np.float32)
    # A non-final round: no Fisher, no consolidation.
    strategy.apply_uploads([Upload(0, {"w": ones}, 1.0, MetricRecord())])
    assert strategy.fisher == {} and strategy.anchor == {}
    uploads = [
        Upload(0, {"w": ones, "ewc-fisher/w": 1 * ones}, 1.0, MetricRecord()),
        Upload(1, {"w": 3 * ones, "ewc-fisher/w": 3 * ones}, 3.0, MetricRecord()),
    ]
    strategy.apply_uploads(uploads)
    np.testing.assert_allclose(strategy.current["w"], 2.5)
    np.testing.assert_allclose(strategy.fisher["w"], 2.5)  # (1*1 + 3*3) / 4
    np.testing.assert_allclose(strategy.anchor["w"], 2.5)
    sent = strategy.client_arrays(0)
    assert set(sent) == {"w", "ewc-fisher/w", "ewc-anchor/w"}
    plain, anchor, fisher = split_ewc(sent)
    assert set(plain) == set(anchor) == set(fisher) == {"w"}
    strategy.apply_uploads(uploads)  # the next stage's last round: F accumulates
    np.testing.assert_allclose(strategy.fisher["w"], 5.0)


def test_ewc_keys_match_the_adapter_keys():
    path = prepare_runtime(RunConfig(train_size=40, test_size=5)).base_path
    model = adapted_model(path, 4, 2.0, 0.0)
    assert set(lora_parameters(model)) == set(lora_state(model))


# --- O-LoRA and M-LoRA -------------------------------------------------------------


def test_orthogonality_loss_is_zero_for_orthogonal_rows_and_l1_otherwise():
    eye = torch.eye(6)
    a_new, previous = eye[:2], eye[2:6].reshape(2, 2, 6)
    assert orthogonality_loss(a_new, previous).item() == 0.0
    assert orthogonality_loss(a_new, previous[:0]).item() == 0.0
    a_prev = torch.randn(1, 2, 6)
    expected = (a_new @ a_prev[0].T).abs().sum()
    assert orthogonality_loss(a_new, a_prev).item() == pytest.approx(expected.item())
    assert orthogonality_loss(a_prev[0], a_prev).item() > 0


def _block_model(capacity=3, rank=2):
    torch.manual_seed(0)
    layer = SubspaceLoraLinear(
        nn.Linear(6, 5), num_subspaces=capacity, rank=rank, scaling=2.0
    )
    with torch.no_grad():
        layer.lora_B.normal_()
    model = nn.Sequential(layer)
    set_activation(model, torch.ones(capacity))
    return model, layer


def test_olora_training_leaves_earlier_blocks_unchanged_and_reduces_overlap():
    model, layer = _block_model()
    before = (layer.lora_A.detach().clone(), layer.lora_B.detach().clone())
    handles = freeze_other_blocks(model, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.0)
    x, y = torch.randn(16, 6), torch.randn(16, 5)
    overlap = orthogonality_loss(layer.lora_A[1], layer.lora_A[:1]).item()
    for _ in range(30):
        loss = (model(x) - y).pow(2).mean() + olora_regulariser(
            model, 1, lambda_orth=1.0, lambda_l2=0.01
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for handle in handles:
        handle.remove()
    for factor, old in zip((layer.lora_A, layer.lora_B), before, strict=True):
        assert torch.equal(factor[0], old[0])  # earlier block frozen
        assert torch.equal(factor[2], old[2])  # later block untouched
        assert not torch.equal(factor[1], old[1])  # current block trained
    assert orthogonality_loss(layer.lora_A[1], layer.lora_A[:1]).item() < overlap


def test_mlora_merge_is_the_sum_of_module_deltas():
    model, layer = _block_model()
    x = torch.randn(4, 6)
    deltas = sum(layer.scaling * layer.lora_B[k] @ layer.lora_A[k] for k in range(3))
    torch.testing.assert_close(merged_delta(layer, 3), deltas)
    expected = layer.base_layer(x) + x @ deltas.T
    torch.testing.assert_close(model(x), expected)
    torch.testing.assert_close(merge_into_base(layer, 3)(x), expected)


def test_blocks_round_trip_and_absent_blocks_are_zero():
    model, layer = _block_model()
    saved = {**block_state(model, 0), **block_state(model, 1)}
    assert all(k.startswith(("block0/", "block1/")) for k in saved)
    load_blocks(model, saved)
    assert torch.count_nonzero(layer.lora_A[2]) == 0
    assert torch.count_nonzero(layer.lora_B[2]) == 0
    again = {**block_state(model, 0), **block_state(model, 1)}
    for key, value in saved.items():
        np.testing.assert_array_equal(again[key], value)


def test_block_strategy_trains_only_the_current_block():
    opened = []

    def init_block(k):
        opened.append(k)
        return {"m.lora_A.weight": np.full((2, 3), k + 1.0, np.float32)}

    policy = RoundPolicy(clients_per_round=1, seed=0)
    federation = Federation({1: 0}, policy, ServerOptimizerSpec())
    strategy = BlockLora(federation=federation, init_block=init_block)
    strategy.current = {"block0/m.lora_A.weight": np.ones((2, 3), np.float32)}
    strategy._stage = 1
    strategy.current.update(
        {"block1/" + k: v for k, v in strategy.init_block(1).items()}
    )
    assert set(strategy.expected_upload(0)) == {"block1/m.lora_A.weight"}
    upload = {"block1/m.lora_A.weight": np.zeros((2, 3), np.float32)}
    strategy.apply_uploads([Upload(0, upload, 1.0, MetricRecord())])
    np.testing.assert_array_equal(strategy.current["block0/m.lora_A.weight"], 1.0)
    np.testing.assert_array_equal(strategy.current["block1/m.lora_A.weight"], 0.0)
    assert opened == [1]


# --- MoELoRA -----------------------------------------------------------------------


def test_moelora_gate_sums_to_one_and_routes_top_k():
    torch.manual_seed(0)
    layer = MoeLoraLinear(nn.Linear(6, 5), num_experts=4, rank=2, top_k=2, scaling=2.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 7, 6)
    gate = layer.gate(x)
    torch.testing.assert_close(gate.sum(-1), torch.ones(3, 7))
    assert torch.all((gate > 0).sum(-1) == 2)
    chosen = (x @ layer.lora_router.T).topk(2, dim=-1).indices.sort(-1).values
    assert torch.equal((gate > 0).nonzero()[:, -1].view(3, 7, 2), chosen)
    expert = torch.stack(
        [x @ (layer.lora_B[e] @ layer.lora_A[e]).T for e in range(4)], dim=-2
    )
    expected = layer.base_layer(x) + 2.0 * (gate.unsqueeze(-1) * expert).sum(-2)
    torch.testing.assert_close(layer(x), expected)
    # The router learns: its gradient flows through the top-k softmax.
    layer(x).sum().backward()
    assert layer.lora_router.grad is not None
    assert layer.lora_router.grad.abs().sum() > 0


def test_moelora_top_1_is_one_hot():
    layer = MoeLoraLinear(nn.Linear(6, 5), num_experts=3, rank=1, top_k=1, scaling=1.0)
    gate = layer.gate(torch.randn(10, 6))
    assert torch.all(gate.max(-1).values == 1.0)


# --- config and paper numbers ------------------------------------------------------


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"ewc-lambda": -1.0}, "ewc-lambda=-1.0 must be >= 0"),
        ({"olora-lambda-orth": -0.5}, "olora-lambda-orth"),
        ({"olora-lambda-l2": -1}, "olora-lambda-l2"),
        ({"moelora-experts": 0}, "moelora-experts=0 must be >= 1"),
        ({"moelora-top-k": 9}, "moelora-top-k=9 must lie in [1, moelora-experts=8]"),
        ({"moelora-top-k": 0}, "moelora-top-k=0"),
        ({"method": "moelora", "moelora-experts": 5}, "divisible by moelora-experts"),
    ],
)
def test_bad_baseline_values_name_the_key(values, fragment):
    with pytest.raises(ConfigError) as error:
        config = RunConfig.from_mapping(values)
        get_method(config.method).check_config(config)
    assert fragment in str(error.value)
    assert "\n" not in str(error.value)


def test_paper_table_lists_only_known_methods_with_their_numbers():
    text = paper_table(["finetune", "disco", "nosuch"])
    assert "| finetune | 47.20 | 68.79 | 57.96 | 54.22 |" in text
    assert "| disco | 56.22 |" in text
    assert "nosuch" not in text
    assert PAPER_RESULTS["ewc"][2] is None
    assert "| ewc | 47.92 | 69.22 | - | - |" in paper_table(["ewc"])


def test_compare_paper_flag_prints_the_papers_numbers_apart(
    tmp_path, monkeypatch, capsys
):
    import fcit_flower.cli as cli
    import fcit_flower.runtime as runtime

    fake = {"last": 10.0, "avg": 20.0, "bwt": -5.0, "flower_wall_seconds": 1.0}
    monkeypatch.setattr(cli, "run_one", lambda config, **kwargs: dict(fake))
    monkeypatch.setattr(runtime, "prepare_runtime", lambda config: None)
    argv = ["compare", "--methods", "finetune,ewc,olora,mlora,moelora"]
    assert cli.main([*argv, "--results-dir", str(tmp_path), "--paper"]) == 0
    out = capsys.readouterr().out
    ours, paper = out.split("Paper's numbers")
    assert "| moelora | 10.00 | 20.00 | -5.00 | n/a | - | 1 |" in ours
    assert "47.20" not in ours and "| finetune | 47.20 | 68.79 |" in paper
    assert "LLaVA-1.5-7B" in paper
    combo = tmp_path / "hom-task-b1"
    assert "47.20" not in (combo / "compare.md").read_text()
    assert "| olora | 49.87 |" in (combo / "paper.md").read_text()
