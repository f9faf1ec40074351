"""Identity-token protection: clip, seeded noise, accounting with the updates."""

import json
from pathlib import Path

import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.privacy_accountant import NeighboringRelation
from dp_accounting.rdp import RdpAccountant
from fake_grid import FakeGrid
from flwr.app import ConfigRecord
from test_differential_privacy import _disco as _strategy
from test_differential_privacy import spec
from test_disco_strategy import NODES, SIZES, TOKENS, honest, make_handler
from test_disco_strategy import run_round as disco_round

from fcit_flower.config import ConfigError, RunConfig
from fcit_flower.methods.base import ClientSetup
from fcit_flower.methods.disco import Disco as DiscoMethod
from fcit_flower.methods.disco import token_norm_guard
from fcit_flower.models.identity import get_encoder
from fcit_flower.privacy import (
    PrivacySpec,
    local_seed,
    noised_token_bound,
    privatize_token,
    token_seed,
)
from fcit_flower.protocol import IDENTITY_TOKEN, KIND, STAGE, subspace_arrays
from fcit_flower.strategies.privacy_ledger import PrivacyBudgetError, PrivacyLedger
from fcit_flower.tasks.fcit_data import Sample

# --- the client's mechanism --------------------------------------------------


@pytest.mark.parametrize("scale", [0.0, 0.3, 1.0, 40.0])
def test_clipped_token_norm_is_at_most_clip_and_keeps_direction(scale):
    token = scale * np.random.default_rng(1).normal(size=384).astype(np.float32)
    out = privatize_token(token, clip=1.0, noise=0.0, seed=[1])  # noise 0: clip only
    norm = float(np.linalg.norm(token.astype(np.float64)))
    assert np.linalg.norm(out.astype(np.float64)) <= 1.0 * (1 + 1e-6)
    assert out.dtype == np.float32
    want = token if norm <= 1.0 else token.astype(np.float64) / norm
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-7)


def test_token_noise_std_is_noise_times_clip_and_seeded():
    token = np.zeros(200_000, np.float32)
    seed = token_seed(9, stage=2, position=3)
    out = privatize_token(token, clip=0.5, noise=3.0, seed=seed)
    assert out.std() == pytest.approx(3.0 * 0.5, rel=0.01)
    assert abs(out.mean()) < 0.01
    again = privatize_token(token, clip=0.5, noise=3.0, seed=seed)
    np.testing.assert_array_equal(out, again)  # same seed: same noised token
    for other in (
        token_seed(9, stage=3, position=3),
        token_seed(9, stage=2, position=4),
    ):
        assert not np.array_equal(
            out, privatize_token(token, clip=0.5, noise=3.0, seed=other)
        )
    # dp-noise-seed = 0: fresh entropy (a seed in the run-config is no secret)
    assert token_seed(0, stage=2, position=3) is None
    fresh = [privatize_token(token[:8], clip=0.5, noise=3.0, seed=None) for _ in "ab"]
    assert not np.array_equal(*fresh)
    # token noise is not the update noise of the same site, stage and round
    assert seed != local_seed(9, 2, 1, 3, 0)


def test_honest_noised_tokens_stay_below_the_norm_guard():
    bound = noised_token_bound(clip=1.0, noise=3.0, dimension=384)
    rng = np.random.default_rng(0)
    norms = [
        np.linalg.norm(privatize_token(np.ones(384), clip=1.0, noise=3.0, seed=[s]))
        for s in rng.integers(1 << 30, size=300)
    ]
    assert max(norms) < bound < 2 * 3.0 * np.sqrt(384)
    runtime = None  # the guard needs the token dimension only when noise is on
    assert token_norm_guard(RunConfig(), runtime) == RunConfig().max_token_norm


def _token_setup(config, stage=0, position=0):
    questions = [
        "What is the total of the bars? Answer with a number.",
        "Which colour is the largest slice?",
        "Count the triangles in the picture.",
    ]
    samples = [
        Sample(id=str(i), image=Path("x.png"), question=q, answer="1")
        for i, q in enumerate(questions)
    ]
    request = ConfigRecord({KIND: IDENTITY_TOKEN, STAGE: stage})
    return (
        ClientSetup(config, None, request, position, samples, ("t",)),  # type: ignore[arg-type]
        questions,
    )


def test_default_config_sends_the_unchanged_token_and_noise_is_seeded():
    # token-noise = 0 (default): the identity token is bit-identical to the mean
    # instruction feature, as before token protection existed.
    config = RunConfig(method="disco")
    assert config.token_noise == 0.0
    assert PrivacySpec.from_config(config) is None
    setup, questions = _token_setup(config)
    sent = DiscoMethod().answer_query(setup)["arrays"]["identity-token"].numpy()
    plain = get_encoder("minilm").identity_token(questions).astype(np.float32)
    np.testing.assert_array_equal(sent, plain)

    noisy = config.replace(token_noise=0.5, token_clip=0.8, dp_noise_seed=5)
    setup, _ = _token_setup(noisy, stage=1, position=2)
    first = DiscoMethod().answer_query(setup)["arrays"]["identity-token"].numpy()
    again = DiscoMethod().answer_query(setup)["arrays"]["identity-token"].numpy()
    np.testing.assert_array_equal(first, again)  # a resumed run sends the same
    want = privatize_token(
        plain, clip=0.8, noise=0.5, seed=token_seed(5, stage=1, position=2)
    )
    np.testing.assert_array_equal(first, want)


# --- configuration -----------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"token-noise": -1.0}, "token-noise=-1.0 must be >= 0"),
        ({"token-clip": 0.0}, "token-clip=0.0 must be > 0"),
        ({"token-noise": float("nan")}, "token-noise"),
        (
            {"method": "finetune", "token-noise": 1.0},
            "token-noise=1.0 needs method='disco'",
        ),
    ],
)
def test_bad_token_values_name_key_and_value(values, words):
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_mapping({"method": "disco", **values})
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_token_noise_alone_gives_an_off_mode_spec():
    privacy = PrivacySpec.from_config(RunConfig(method="disco", token_noise=2.0))
    assert privacy is not None and privacy.mode == "off"
    assert privacy.token_noise == 2.0 and privacy.token_clip == 1.0


# --- accounting --------------------------------------------------------------


def _reference(*, population, sample_size, z, rounds, z_token, tokens, delta=1e-5):
    """dp-accounting's RDP accountant: sampled update rounds + plain token events."""
    relation = (
        NeighboringRelation.REPLACE_ONE
        if rounds
        else NeighboringRelation.ADD_OR_REMOVE_ONE
    )
    accountant = RdpAccountant(neighboring_relation=relation)
    if rounds:
        accountant.compose(
            dp_event.SampledWithoutReplacementDpEvent(
                population, sample_size, dp_event.GaussianDpEvent(z / 2)
            ),
            rounds,
        )
    accountant.compose(dp_event.GaussianDpEvent(z_token / 2), tokens)
    return accountant.get_epsilon(delta)


def test_epsilon_composes_token_releases_and_updates():
    # Stage 1: sites 0-4 in round 1, newcomers 5 and 6 in round 2 (one release
    # each: still one event); stage 2: everyone once. 3 rounds, 2 token events.
    privacy = spec(noise=1.0, population=10, sample_size=5, token_noise=2.0)
    ledger = PrivacyLedger(privacy)
    plan = [(0, 1, [0, 1, 2, 3, 4]), (0, 2, [5, 6]), (1, 1, list(range(10)))]
    for stage, server_round, asked in plan:
        ledger.release_tokens(stage=stage, server_round=server_round, positions=asked)
        ledger.record(stage=stage, server_round=server_round, clipped=0, uploads=5)
    want = _reference(
        population=10, sample_size=5, z=1.0, rounds=3, z_token=2.0, tokens=2
    )
    assert ledger.epsilon() == pytest.approx(want, rel=1e-12)
    assert [r["token_events"] for r in ledger.rounds] == [1, 0, 1]
    report = ledger.report()
    assert report["token_noise_multiplier"] == 2.0 and report["token_clip"] == 1.0
    alone = _reference(
        population=10, sample_size=5, z=1.0, rounds=2, z_token=2.0, tokens=1
    )
    assert report["per_stage"][0]["stage_epsilon"] == pytest.approx(alone)
    json.dumps(report)


def test_token_noise_with_dp_off_is_accounted_and_equals_a_hand_bound():
    # dp = off: T plain Gaussian releases of multiplier m = z_t / 2, RDP T a / (2 m^2);
    # the classic conversion gives eps <= T/(2m^2) + sqrt(2 T log(1/delta)) / m
    # and dp-accounting (tighter) lies just below.
    z_token, stages, delta = 8.0, 3, 1e-5
    ledger = PrivacyLedger(spec(mode="off", token_noise=z_token))
    for stage in range(stages):
        ledger.release_tokens(stage=stage, server_round=1, positions=[0, 1])
        ledger.record(stage=stage, server_round=1, clipped=0, uploads=2)
    want = _reference(
        population=10, sample_size=5, z=1.0, rounds=0, z_token=z_token, tokens=stages
    )
    assert ledger.epsilon() == pytest.approx(want, rel=1e-12)
    m = z_token / 2
    hand = stages / (2 * m**2) + np.sqrt(2 * stages * np.log(1 / delta)) / m
    assert 0.8 * hand < ledger.epsilon() <= hand
    report = ledger.report()
    assert report["mode"] == "off" and report["clip"] is None
    assert report["epsilon"] == ledger.epsilon()


def test_a_site_asked_twice_in_a_stage_counts_twice_and_state_round_trips():
    ledger = PrivacyLedger(spec(token_noise=1.0))
    ledger.release_tokens(stage=0, server_round=1, positions=[0, 1])
    restored = PrivacyLedger(spec(token_noise=1.0))
    restored.load_state(json.loads(json.dumps(ledger.state())))
    for each in (ledger, restored):  # site 1's reply failed: asked again
        assert each.tokens.events(stage=0, positions=[1, 2]) == 1
        each.release_tokens(stage=0, server_round=2, positions=[1, 2])
        assert each.tokens.events(stage=1, positions=[1]) == 1
    assert restored.epsilon() == ledger.epsilon()
    assert restored.accountant.num_releases == 2
    older = ledger.state()
    del older["tokens"]  # a checkpoint written before token noise existed
    PrivacyLedger(spec()).load_state(older)


def test_disco_accounts_every_released_token_and_keeps_plain_averages_if_dp_off():
    privacy = spec(mode="off", population=8, sample_size=8, token_noise=4.0)
    strategy = _strategy(privacy)
    bad, silent = {2}, {103}  # site 2 sends a malformed token, site 3 no reply

    def token(client):
        return np.ones(5, np.float32) if client in bad else TOKENS[client]

    def handler(node, message):
        if node in silent and message.metadata.message_type == "query":
            return None
        return make_handler(honest, token)(node, message)

    grid = FakeGrid(list(NODES), handler)
    record, _ = disco_round(strategy, grid)
    assert sorted(strategy.assignment) == [0, 1, 4, 5, 6, 7]
    # dp = off: updates are averaged by sample count exactly as without DP
    w0 = np.average([1, 2], weights=[SIZES[c] for c in (0, 1)])
    got = subspace_arrays({k: v.numpy() for k, v in record.items()}, 0)
    np.testing.assert_allclose(got["m.lora_A.weight"], w0)
    one = _reference(
        population=8, sample_size=8, z=1.0, rounds=0, z_token=4.0, tokens=1
    )
    assert strategy.privacy.epsilon() == pytest.approx(one, rel=1e-12)
    assert strategy.privacy.rounds[0]["token_events"] == 1
    # Round 2 asks sites 2 and 3 again. Site 2's rejected token did leave it:
    # its second release is a second event; site 3's first is not.
    bad.clear()
    silent.clear()
    disco_round(strategy, grid, server_round=2)
    assert sorted(strategy.assignment) == list(range(8))
    two = _reference(
        population=8, sample_size=8, z=1.0, rounds=0, z_token=4.0, tokens=2
    )
    assert strategy.privacy.epsilon() == pytest.approx(two, rel=1e-12)
    assert strategy.privacy.rounds[1]["token_events"] == 1


def test_token_budget_stops_before_any_token_leaves_a_site():
    one = _reference(
        population=8, sample_size=8, z=1.0, rounds=0, z_token=4.0, tokens=1
    )
    privacy = spec(
        mode="off", population=8, sample_size=8, token_noise=4.0, max_epsilon=one / 2
    )
    strategy = _strategy(privacy)
    grid = FakeGrid(list(NODES), make_handler(honest))
    with pytest.raises(PrivacyBudgetError) as caught:
        disco_round(strategy, grid)
    assert "stage 1 round 1 with 8 identity tokens would exceed" in str(caught.value)
    assert grid.sent == []  # not even the query was sent
    assert strategy.privacy.epsilon() == 0.0


def test_unnoised_tokens_under_central_dp_are_not_accounted():
    strategy = _strategy(spec(population=8, sample_size=8))
    disco_round(strategy, FakeGrid(list(NODES), make_handler(honest)))
    assert "token_events" not in strategy.privacy.rounds[0]
    np.testing.assert_allclose(strategy.slot_tokens()[0], TOKENS[0])
