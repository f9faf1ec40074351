"""DISCO: Dynamic Knowledge Organization (training) + Subspace Selective Activation.

Guo et al., "Federated Continual Instruction Tuning", ICCV 2025.

- Server (:class:`fcit_flower.strategies.disco.Disco`): identity-token slots, one
  LoRA subspace of rank ``lora-rank / num-subspaces`` per slot, aggregated per
  subspace; the routing report (``routing.json``) after each evaluation.
- Client: answers the identity-token query (mean instruction feature of its data
  for the stage) and trains only its assigned subspace, as a PEFT adapter.
- Inference, Subspace Selective Activation (Eq. 7): for a test instruction with
  feature ``f`` and global identity tokens ``g_i`` of the occupied subspaces,
  ``s_i = cos(f, g_i)`` and

  - softmax (default): ``w = softmax(s / eps)``, eps = 0.05
  - concat: ``w_i = 1`` for every occupied subspace (plain sum of subspaces)
  - cosine: ``w_i = s_i`` (raw similarities as weights)
  - argmax: one-hot on the most similar subspace

  Unoccupied subspaces always get weight 0; one fully active subspace reproduces
  the scale it was trained at.

Scale of a subspace (``subspace-scaling``). The authors' code scales every
subspace by ``alpha / lora-rank``, as if it were the whole adapter. Under Adam a
LoRA's first updates change the layer's output roughly in proportion to ``scale x
rank`` (each of the ``rank`` directions moves by about the learning rate), so a
rank-``r/E`` subspace at ``alpha / r`` learns a new task about ``E`` times slower
than Finetune's rank-``r`` adapter at the same lr: on mini-FCIT's val split its
score right after its own stage was 0.89x Finetune's. The default ``"rank"``
applies LoRA's own convention (Hu et al., ``alpha / rank`` of the trained piece),
which makes the speed independent of the rank; it applies alike to O-/M-LoRA
blocks and MoE-LoRA experts. Chosen on the val split
(``python -m bench.bench_validation --part scaling``); ``"total"`` keeps the
authors' behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from flwr.app import MetricRecord, RecordDict

from fcit_flower.config import RunConfig
from fcit_flower.evaluation import EvaluationModel, StageEvaluation
from fcit_flower.export.tensors import (
    read_arrays,
    read_peft_adapter,
    read_router,
    save_arrays,
    save_peft_adapter,
    save_router,
)
from fcit_flower.methods.base import ClientSetup, ClientUpdate, Method, ServerSetup
from fcit_flower.methods.finetune import train_peft
from fcit_flower.methods.registry import register
from fcit_flower.models.adapters import (
    load_projector_state,
    projector_state,
    subspace_model,
)
from fcit_flower.models.identity import encoder_location
from fcit_flower.models.subspace_lora import load_slots, set_activation
from fcit_flower.privacy import noised_token_bound, privatize_token, token_seed
from fcit_flower.protocol import (
    ARRAYS_KEY,
    IDENTITY_TOKEN,
    KIND,
    METRICS_KEY,
    NUM_EXAMPLES,
    STAGE,
    SUBSPACE,
    TOKEN_KEY,
    Arrays,
    ProtocolError,
    occupied_slots,
    read_int,
    slot_prefix,
    split_projector,
    subspace_arrays,
    to_record,
    token_key,
    token_weight_key,
)
from fcit_flower.runtime import Runtime, sample_features, token_dimension
from fcit_flower.similarity import cosine_matrix
from fcit_flower.tasks.fcit_data import Sample

if TYPE_CHECKING:
    from fcit_flower.strategies.continual import ContinualFedAvg


def ssa_weights(
    features: np.ndarray,
    tokens: np.ndarray,
    *,
    capacity: int,
    mode: str = "softmax",
    eps: float = 0.05,
) -> np.ndarray:
    """Subspace Selective Activation: subspace weights per instruction feature.

    Parameters
    ----------
    features : ndarray, shape (n, d)
        Instruction features (same encoder as the identity tokens).
    tokens : ndarray, shape (k, d)
        Global identity tokens of the ``k`` occupied subspaces (slots ``0..k-1``).
    capacity : int
        E, total subspaces; columns ``k..E-1`` are zero.
    mode : {"softmax", "concat", "cosine", "argmax"}
        SSA variant (the paper's ablation).
    eps : float
        Softmax temperature.

    Returns
    -------
    ndarray, shape (n, capacity)
    """
    n, occupied = features.shape[0], tokens.shape[0]
    weights = np.zeros((n, capacity), dtype=np.float32)
    if occupied == 0:
        return weights
    sims = cosine_matrix(features, tokens)
    if mode == "softmax":
        logits = sims / eps
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        active = exp / exp.sum(axis=1, keepdims=True)
    elif mode == "concat":
        active = np.ones_like(sims)
    elif mode == "cosine":
        active = sims
    elif mode == "argmax":
        active = np.zeros_like(sims)
        active[np.arange(n), sims.argmax(axis=1)] = 1.0
    else:
        raise ValueError(f"unknown ssa-mode {mode!r}")
    weights[:, :occupied] = active
    return weights


def token_norm_guard(config: RunConfig, runtime: Runtime) -> float:
    """``max-token-norm``, raised to what an honest noised token can reach.

    Noise of std ``z_t C`` on ``d`` coordinates has norm about ``z_t C sqrt(d)``
    (20 for z_t = 1, d = 384): the guard would refuse every honest token. It is
    raised to a bound honest tokens exceed with negligible probability instead
    of switched off; 0 (off) stays off.
    """
    limit = config.max_token_norm
    if not config.token_noise or not limit:
        return limit
    bound = noised_token_bound(
        clip=config.token_clip,
        noise=config.token_noise,
        dimension=token_dimension(config, runtime),
    )
    return max(limit, bound)


def ssa_evaluation_model(
    config: RunConfig, runtime: Runtime, arrays: Arrays
) -> EvaluationModel:
    """The base with every subspace, mixed per example by SSA before each batch."""
    capacity = config.num_subspaces
    model = subspace_model(
        runtime.base_path,
        capacity,
        config.subspace_rank,
        config.scaling(config.subspace_rank),
    )
    load_slots(model, {slot: subspace_arrays(arrays, slot) for slot in range(capacity)})
    projector = split_projector(arrays)[1]
    load_projector_state(model, projector or projector_state(runtime.bundle.model))
    occupied = occupied_slots(arrays)
    tokens = (
        np.stack(
            [
                np.asarray(arrays[token_key(k)], dtype=np.float64)
                for k in range(occupied)
            ]
        )
        if occupied
        else np.zeros((0, 1))
    )

    def activate(batch: Sequence[Sample]) -> np.ndarray:
        features = sample_features(config, runtime, batch)
        weights = ssa_weights(
            features,
            tokens,
            capacity=capacity,
            mode=config.ssa_mode,
            eps=config.ssa_eps,
        )
        set_activation(model, torch.from_numpy(weights))
        return weights

    return EvaluationModel(model, before_batch=activate)


class Disco(Method):
    """DISCO: identity-token routing to subspaces, SSA at inference."""

    name = "disco"

    def build_server(self, setup: ServerSetup) -> tuple[ContinualFedAvg, Arrays]:
        """The DISCO strategy; subspaces open as tokens arrive (now: the projector)."""
        from fcit_flower.strategies.disco import Disco as DiscoStrategy

        config = setup.config
        strategy = DiscoStrategy(
            federation=setup.federation,
            num_subspaces=config.num_subspaces,
            tau=config.tau,
            token_dim=token_dimension(config, setup.runtime),
            init_subspace=setup.lora_factors(config.subspace_rank),
            max_token_norm=token_norm_guard(config, setup.runtime),
            # Routing diagnostics from the schedule: no task name leaves a client.
            client_tasks=self.schedule(setup.runtime.schedule).client_tasks,
        )
        return strategy, setup.projector()

    def answer_query(self, setup: ClientSetup) -> RecordDict:
        """The identity token: mean instruction feature of the stage's data."""
        kind = setup.request.get(KIND)
        if kind != IDENTITY_TOKEN:
            raise ProtocolError(f"DISCO answers no {kind!r} query")
        config = setup.config
        features = sample_features(config, setup.runtime, setup.samples)
        token = features.mean(axis=0)
        if config.token_noise > 0:  # no unnoised token leaves the site
            seed = token_seed(
                config.dp_noise_seed,
                stage=read_int(setup.request, STAGE),
                position=setup.position,
            )
            token = privatize_token(
                token, clip=config.token_clip, noise=config.token_noise, seed=seed
            )
        return RecordDict(
            {
                ARRAYS_KEY: to_record({TOKEN_KEY: token.astype(np.float32)}),
                METRICS_KEY: MetricRecord({NUM_EXAMPLES: len(setup.samples)}),
            }
        )

    def train_client(self, setup: ClientSetup, received: Arrays) -> ClientUpdate:
        """Train the assigned subspace (a rank ``lora-rank / E`` PEFT adapter)."""
        update = train_peft(setup, received, setup.config.subspace_rank)
        subspace = read_int(setup.request, SUBSPACE)
        return ClientUpdate(update.arrays, update.loss, {SUBSPACE: subspace})

    def evaluation_model(
        self, config: RunConfig, runtime: Runtime, arrays: Arrays
    ) -> EvaluationModel:
        """Every subspace, weighted per example by SSA."""
        return ssa_evaluation_model(config, runtime, arrays)

    def stage_files(
        self, strategy: ContinualFedAvg, evaluation: StageEvaluation
    ) -> dict[str, Any]:
        """``routing.json``: client -> subspace, routing accuracy, SSA weights."""
        from fcit_flower.strategies.disco import Disco as DiscoStrategy
        from fcit_flower.strategies.disco import routing_report

        assert isinstance(strategy, DiscoStrategy)  # built by build_server
        report = routing_report(
            strategy.routing,
            strategy.slot_tokens(),
            evaluation.mean_activation,
            evaluation.top_adapters,
        )
        return {"routing.json": report}

    def export_arrays(
        self, config: RunConfig, arrays: Arrays, *, folder: Path, base_name: str
    ) -> dict[str, Any]:
        """A PEFT adapter per subspace (``subspace-<slot>/``) and the router."""
        rank = config.subspace_rank
        slots = [k for k in range(config.num_subspaces) if subspace_arrays(arrays, k)]
        for slot in slots:
            save_peft_adapter(
                folder / f"subspace-{slot}",
                subspace_arrays(arrays, slot),
                rank=rank,
                scaling=config.scaling(rank),
                dropout=config.lora_dropout,
                base_name=base_name,
            )
        projector = split_projector(arrays)[1]
        if projector:
            save_arrays(folder, projector, {"kind": "projector"}, name=PROJECTOR_FILE)
        occupied = occupied_slots(arrays)
        router = {
            "subspaces": {str(k): f"subspace-{k}" for k in slots},
            "occupied_slots": occupied,
            "capacity": config.num_subspaces,
            "tau": config.tau,
            "ssa_mode": config.ssa_mode,
            "ssa_eps": config.ssa_eps,
            "token_source": config.token_source,
            "identity_encoder": config.identity_encoder,
            "identity_encoder_path": encoder_location(
                config.identity_encoder, config.identity_encoder_path
            ),
            "token_sample_mass": [
                float(arrays[token_weight_key(k)][0])
                for k in range(occupied)
                if token_weight_key(k) in arrays
            ],
        }
        save_router(folder, [arrays[token_key(k)] for k in range(occupied)], router)
        return {
            "kind": "disco",
            "subspaces": len(slots),
            "occupied_slots": occupied,
            "rank": rank,
        }

    def import_arrays(self, config: RunConfig, folder: Path) -> Arrays:
        """Subspaces, identity tokens (and projector) as the run held them."""
        tokens, router = read_router(folder)
        arrays: Arrays = {}
        for slot, name in router["subspaces"].items():
            for key, value in read_peft_adapter(folder / name).items():
                arrays[slot_prefix(int(slot)) + key] = value
        for slot, token in enumerate(tokens):
            arrays[token_key(slot)] = token
        for slot, mass in enumerate(router.get("token_sample_mass", [])):
            arrays[token_weight_key(slot)] = np.array([mass], dtype=np.float64)
        if (folder / f"{PROJECTOR_FILE}.safetensors").is_file():
            arrays.update(read_arrays(folder, name=PROJECTOR_FILE))
        return arrays


PROJECTOR_FILE = "projector"  # projector.safetensors when it was trained

register(Disco())
