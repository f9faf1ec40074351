"""RunConfig: every run-config key, its default, type and allowed values.

The one source of configuration. ``pyproject.toml`` ``[tool.flwr.app.config]`` holds
the same defaults for ``flwr run``; :func:`RunConfig.from_mapping` validates a
run-config once, at start, and raises :class:`ConfigError` with a one-line message
naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from fcit_flower.config_values import (
    IMPORT_PATH,
    ConfigError,
    checkpoint_dir,
    choice,
    coerce,
    finite,
    name_or_path,
    non_negative,
    positive,
    require_cuda,
)
from fcit_flower.site_admission import parse_site_nodes

__all__ = ["ConfigError", "RunConfig", "require_cuda"]

SCENARIOS = ("hom", "het")
SETTINGS = ("task", "capability")
FAULT_KINDS = ("error", "nan", "norm", "shape", "dtype")
MODELS = ("tiny", "llava", "llava-1.5-7b")
# Short names of Flower's server optimizers; any other FedOpt / FedAvgM subclass is
# named by its class name in flwr.serverapp.strategy or by its import path.
SERVER_OPTIMIZER_ALIASES = {
    "fedavgm": "FedAvgM",
    "fedadam": "FedAdam",
    "fedadagrad": "FedAdagrad",
    "fedyogi": "FedYogi",
}
PLAIN_AVERAGE = "fedavg"
SERVER_OPTIMIZER_STATES = ("reset", "keep")
SSA_MODES = ("softmax", "concat", "cosine", "argmax")
SUBSPACE_SCALINGS = ("rank", "total")
TOKEN_SOURCES = ("text", "image", "text+image")
IDENTITY_ENCODERS = ("minilm", "clip")
QUANTIZATIONS = ("none", "4bit", "8bit")
TORCH_DTYPES = ("float32", "bfloat16", "float16")
DEVICES = ("cpu", "cuda")
PARTITIONS = ("quantity", "label")
EVAL_SPLITS = ("test", "val")
EXPORTS = ("every-stage", "final", "off")
# How adapter arrays travel, both ways (fcit_flower/transport.py).
TRANSPORT_DTYPES = ("float32", "bfloat16", "float16")
# Client-level differential privacy: off, central (the server clips and noises the
# aggregates) or local (every client clips and noises its own upload).
DP_MODES = ("off", "central", "local")
# Keys whose values must be > 0, and keys whose values must lie in [0, 1).
_POSITIVE_KEYS = (
    "beta lr projector-lr lora-alpha ssa-eps server-lr server-eps num-clients "
    "clients-per-round rounds-per-stage local-epochs batch-size lora-rank "
    "num-subspaces train-size test-size val-size min-client-size max-new-tokens "
    "checkpoint-keep round-timeout max-num-examples mtl-epochs dp-clip dp-noise "
    "token-clip"
).split()
_FRACTION_KEYS = (
    "lora-dropout warmup-ratio server-momentum server-beta1 server-beta2 "
    "fault-rate max-bad-fraction"
).split()
# Keys whose values must be >= 0: seeds, and the upload guards (0 = off, with a
# warning when the run starts; NaN and inf are refused like every float).
_NON_NEGATIVE_KEYS = (
    "seed data-seed fault-seed max-round-retries max-update-norm max-token-norm "
    "dp-max-epsilon dp-noise-seed token-noise"
).split()


@dataclass(frozen=True)
class RunConfig:
    """Validated run configuration (Python names are the keys in snake_case)."""

    method: str = "finetune"
    scenario: str = "hom"
    setting: str = "task"
    beta: float = 1.0
    num_clients: int = 10
    clients_per_round: int = 5
    rounds_per_stage: int = 3
    num_stages: int = 0
    local_epochs: int = 1
    batch_size: int = 8
    lr: float = 3e-3
    projector_lr: float = 3e-4
    train_projector: bool = False
    warmup_ratio: float = 0.03
    lora_rank: int = 32
    lora_alpha: float = 64.0
    lora_dropout: float = 0.05
    num_subspaces: int = 8
    tau: float = 0.9
    ssa_mode: str = "softmax"
    subspace_scaling: str = "rank"
    ssa_eps: float = 0.05
    token_source: str = "text"
    identity_encoder: str = "minilm"
    server_optimizer: str = "fedavg"
    server_lr: float = 1.0
    server_momentum: float = 0.9
    server_optimizer_state: str = "reset"
    server_beta1: float = 0.9
    server_beta2: float = 0.99
    server_eps: float = 1e-3
    seed: int = 0
    data_seed: int = 0
    model: str = "tiny"
    model_path: str = ""
    data_root: str = ""
    train_size: int = 400
    test_size: int = 50
    val_size: int = 50
    min_client_size: int = 4
    max_new_tokens: int = 24
    results_dir: str = "results"
    run_name: str = ""
    # Reliability: checkpoints, resume, client failures, upload bounds.
    resume: bool = False
    checkpoint_keep: int = 2
    min_clients_per_round: int = 1
    max_round_retries: int = 2
    round_timeout: float = 3600.0
    fault_rate: float = 0.0
    fault_seed: int = 0
    fault_kind: str = "error"
    max_update_norm: float = 10.0
    max_token_norm: float = 100.0
    max_num_examples: int = 1_000_000
    transport_dtype: str = "float32"
    site_nodes: str = ""  # deployment: "site=node-id,..." (site_admission.py)
    # The real-model path: LLaVA from a local checkpoint, QLoRA, CLIP tokens.
    quantization: str = "none"
    torch_dtype: str = "float32"
    gradient_checkpointing: bool = False
    device: str = "cpu"
    identity_encoder_path: str = ""
    # Baselines of the FCIT paper: EWC, O-LoRA, M-LoRA, MoELoRA.
    ewc_lambda: float = 10000.0
    olora_lambda_orth: float = 0.5
    olora_lambda_l2: float = 0.0
    moelora_experts: int = 8
    moelora_top_k: int = 2
    mtl_epochs: int = 8
    # Benchmark options: schedule file, label skew, image root, bad records.
    schedule_file: str = ""
    partition: str = "quantity"
    eval_split: str = "test"
    image_root: str = ""
    max_bad_fraction: float = 0.05
    # What is written for use outside the run: adapters/stage-<k>/.
    export: str = "every-stage"
    # Client-level differential privacy (README "Privacy"; strategies/privacy.py).
    dp: str = "off"
    dp_clip: float = 1.0
    dp_noise: float = 1.0
    dp_delta: float = 1e-5
    dp_max_epsilon: float = 0.0
    dp_noise_seed: int = 0
    # Identity-token protection (DISCO): clip to token-clip, noise token-noise * clip.
    token_clip: float = 1.0
    token_noise: float = 0.0

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RunConfig:
        """Build from a run-config mapping (kebab-case keys), validating every key.

        Raises
        ------
        ConfigError
            On an unknown key, a wrong type or a value out of range.
        """
        known = {f.name.replace("_", "-"): f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(
                    f"unknown run-config key {key!r}; known keys: {sorted(known)}"
                )
            field = known[key]
            kwargs[field.name] = coerce(key, value, type(getattr(cls(), field.name)))
        config = cls(**kwargs)
        config.validate()
        return config

    def to_mapping(self) -> dict[str, Any]:
        """The config as kebab-case run-config keys."""
        return {k.replace("_", "-"): v for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes: Any) -> RunConfig:
        """A validated copy with ``changes`` applied."""
        config = dataclasses.replace(self, **changes)
        config.validate()
        return config

    @property
    def subspace_rank(self) -> int:
        """Rank of one DISCO subspace (``lora_rank / num_subspaces``)."""
        return self.lora_rank // self.num_subspaces

    @property
    def lora_scaling(self) -> float:
        """LoRA output scale ``alpha / r`` (the reference uses 128 / 64 = 2)."""
        return self.lora_alpha / self.lora_rank

    def scaling(self, rank: int) -> float:
        """Output scale of a trained adapter piece of ``rank``.

        The piece is a DISCO subspace, an O-/M-LoRA block, a MoE-LoRA expert, or
        the whole adapter. ``subspace-scaling = "rank"``: LoRA's own ``alpha / rank``
        for the piece, so its updates are as large as the whole adapter's
        at the same lr;
        ``"total"`` (the authors' code): ``alpha / lora-rank`` for every piece.
        """
        return self.lora_alpha / (
            rank if self.subspace_scaling == "rank" else self.lora_rank
        )

    @property
    def resolved_run_name(self) -> str:
        """``run_name`` or one derived from the method and setting."""
        if self.run_name:
            return self.run_name
        return (
            f"{self.method}-{self.scenario}-{self.setting}-b{self.beta:g}-s{self.seed}"
        )

    @property
    def run_dir(self) -> Path:
        """Results directory of this run."""
        return Path(self.results_dir).expanduser() / self.resolved_run_name

    def validate(self) -> None:
        """Check every value; raise :class:`ConfigError` naming the first bad key."""
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, float):
                finite(item.name.replace("_", "-"), value)
        for key in _NON_NEGATIVE_KEYS:
            non_negative(key, getattr(self, key.replace("-", "_")))
        name_or_path("method", self.method)
        choice("scenario", self.scenario, SCENARIOS)
        choice("setting", self.setting, SETTINGS)
        choice("model", self.model, MODELS)
        self._validate_server_optimizer()
        choice("ssa-mode", self.ssa_mode, SSA_MODES)
        choice("subspace-scaling", self.subspace_scaling, SUBSPACE_SCALINGS)
        choice("token-source", self.token_source, TOKEN_SOURCES)
        choice("identity-encoder", self.identity_encoder, IDENTITY_ENCODERS)
        self._validate_benchmark()
        for key in _POSITIVE_KEYS:
            positive(key, getattr(self, key.replace("-", "_")))
        for key in _FRACTION_KEYS:
            value = getattr(self, key.replace("-", "_"))
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{key}={value} must lie in [0, 1)")
        if self.num_stages < 0:
            raise ConfigError(f"num-stages={self.num_stages} must be >= 0 (0 = all)")
        if self.clients_per_round > self.num_clients:
            raise ConfigError(
                f"clients-per-round={self.clients_per_round} exceeds "
                f"num-clients={self.num_clients}"
            )
        if self.lora_rank % self.num_subspaces:
            raise ConfigError(
                f"lora-rank={self.lora_rank} must be divisible by "
                f"num-subspaces={self.num_subspaces}"
            )
        if not -1.0 <= self.tau <= 1.0:
            raise ConfigError(f"tau={self.tau} must lie in [-1, 1] (a cosine)")
        self._validate_reliability()
        self._validate_privacy()
        self._validate_baselines()
        if self.data_root and not Path(self.data_root).expanduser().is_dir():
            raise ConfigError(
                f"data-root={self.data_root!r} is not an existing directory"
            )
        self._validate_real_model()
        if (
            self.num_clients * self.min_client_size > self.train_size
            and not self.data_root
        ):
            raise ConfigError(
                f"train-size={self.train_size} is too small for num-clients="
                f"{self.num_clients} x min-client-size={self.min_client_size}"
            )

    def _validate_reliability(self) -> None:
        if not 1 <= self.min_clients_per_round <= self.clients_per_round:
            raise ConfigError(
                f"min-clients-per-round={self.min_clients_per_round} must lie in "
                f"[1, clients-per-round={self.clients_per_round}]"
            )
        choice("fault-kind", self.fault_kind, FAULT_KINDS)
        choice("transport-dtype", self.transport_dtype, TRANSPORT_DTYPES)
        try:
            sites = parse_site_nodes(self.site_nodes)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        if any(site >= self.num_clients for site in sites):
            raise ConfigError(
                f"site-nodes={self.site_nodes!r} names a site outside "
                f"0..num-clients-1={self.num_clients - 1}"
            )

    def _validate_privacy(self) -> None:
        """``dp`` and its delta (clip and noise are positive keys); token noise."""
        choice("dp", self.dp, DP_MODES)
        if not 0.0 < self.dp_delta < 1.0:
            raise ConfigError(f"dp-delta={self.dp_delta} must lie in (0, 1)")
        # Refused rather than ignored: a user who asks for token noise expects
        # a protected token, and only DISCO's clients send one.
        if self.token_noise > 0 and self.method != "disco":
            raise ConfigError(
                f"token-noise={self.token_noise} needs method='disco' (only DISCO "
                f"sends identity tokens), not method={self.method!r}"
            )

    def _validate_real_model(self) -> None:
        """Keys of the real-model path: checkpoint, quantization, device."""
        choice("quantization", self.quantization, QUANTIZATIONS)
        choice("torch-dtype", self.torch_dtype, TORCH_DTYPES)
        choice("device", self.device, DEVICES)
        if self.model != "tiny":
            checkpoint_dir("model-path", self.model_path, "llava", self.model)
        elif self.quantization != "none":
            raise ConfigError(
                f"quantization={self.quantization!r} needs a LLaVA checkpoint "
                "(model='llava' or 'llava-1.5-7b'); the tiny model is not quantized"
            )
        if self.identity_encoder == "clip":
            checkpoint_dir(
                "identity-encoder-path", self.identity_encoder_path, None, "clip"
            )
        if self.device == "cuda":
            require_cuda("device='cuda'")

    def _validate_baselines(self) -> None:
        """Hyper-parameters of EWC, O-LoRA and MoELoRA."""
        for key in ("ewc-lambda", "olora-lambda-orth", "olora-lambda-l2"):
            value = getattr(self, key.replace("-", "_"))
            if not value >= 0:
                raise ConfigError(f"{key}={value} must be >= 0")
        if self.moelora_experts < 1:
            raise ConfigError(f"moelora-experts={self.moelora_experts} must be >= 1")
        if not 1 <= self.moelora_top_k <= self.moelora_experts:
            raise ConfigError(
                f"moelora-top-k={self.moelora_top_k} must lie in "
                f"[1, moelora-experts={self.moelora_experts}]"
            )

    def _validate_server_optimizer(self) -> None:
        """An alias, or a class name / import path resolved when the server starts."""
        name = self.server_optimizer
        known = [PLAIN_AVERAGE, *SERVER_OPTIMIZER_ALIASES]
        lower_unknown = name.islower() and "." not in name
        if name not in known and (lower_unknown or not IMPORT_PATH.fullmatch(name)):
            raise ConfigError(
                f"server-optimizer={name!r} is not allowed; choose one of {known}, "
                "a Flower strategy class (FedYogi) or the import path of a FedOpt "
                "subclass"
            )
        choice(
            "server-optimizer-state",
            self.server_optimizer_state,
            SERVER_OPTIMIZER_STATES,
        )

    def _validate_benchmark(self) -> None:
        """Schedule file, partition kind, image root."""
        choice("partition", self.partition, PARTITIONS)
        choice("eval-split", self.eval_split, EVAL_SPLITS)
        choice("export", self.export, EXPORTS)
        if self.schedule_file:
            path = Path(self.schedule_file).expanduser()
            if path.suffix not in (".toml", ".json"):
                raise ConfigError(
                    f"schedule-file={self.schedule_file!r} must end in .toml or .json"
                )
            if not path.is_file():
                raise ConfigError(
                    f"schedule-file={self.schedule_file!r} is not an existing file"
                )
        if self.image_root and not Path(self.image_root).expanduser().is_dir():
            raise ConfigError(
                f"image-root={self.image_root!r} is not an existing directory"
            )
