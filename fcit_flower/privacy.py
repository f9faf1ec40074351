"""Differential privacy of client updates: clipping and seeded noise (numpy).

Both sides use it: the server under ``dp = "central"``, the ClientApp under
``dp = "local"`` (so it lives outside ``strategies/``). The accounting is in
:mod:`fcit_flower.strategies.privacy_ledger`.

Central: DP-FedAvg with fixed clipping (McMahan et al., "Learning Differentially
Private Recurrent Language Models", ICLR 2018, Alg. 1; Flower's
``DifferentialPrivacyServerSideFixedClipping``), per group of arrays:

1. a client's update is its upload minus what it was sent, clipped in L2 over the
   whole upload to ``C`` (Flower's ``clip_inputs_inplace``, the FlatClip of Andrew
   et al.). For DISCO the upload is one subspace (plus the shared projector when it
   trains), so one clip bounds the client's contribution to every group it feeds;
2. each group ``g`` (a DISCO subspace, the projector, the whole adapter) becomes
   the *unweighted* mean of its ``n_g`` clipped uploads plus Gaussian noise of
   standard deviation ``z * C / n_g`` (Flower's ``compute_stdv``), i.e. noise
   ``z * C`` on the sum of the clipped updates.

Why unweighted: a sample-weighted mean gives one client a weight up to ~1 whatever
``n_g``, so its update would move the aggregate by up to ``C`` instead of ``C / n_g``
(the bound the noise is calibrated to), and the weights themselves would publish
every site's sample count.

Local (:func:`privatize_locally`, Flower's ``LocalDpMod`` with a seed): each
client clips its own update the same way and adds noise of std ``z * C`` to every
entry before uploading, so the server only ever sees noised updates.

The server's noise comes from a generator seeded by (noise seed, stage, round,
group), so a resumed run adds exactly the noise an uninterrupted one adds. Flower's
``add_gaussian_noise_inplace`` draws from NumPy's global generator, which a resume
cannot replay, so it is not used.

Identity tokens (:func:`privatize_token`, ``token-noise > 0``, DISCO only): the
token, the mean sentence embedding of a site's instructions, is itself a release
that a text-embedding inversion can read. Each DISCO client clips it to L2 norm
``token-clip`` and adds Gaussian noise of std ``token-noise * token-clip`` per
coordinate before replying (the Gaussian mechanism, local DP of the token),
whatever ``dp`` is; the ledger accounts every release.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from flwr.supercore.differential_privacy import (
    clip_inputs_inplace,
    compute_stdv,
    get_norm,
)

from fcit_flower.config import RunConfig

Arrays = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class PrivacySpec:
    """The run-config's ``dp-*`` keys, and the sampling they are accounted for.

    Parameters
    ----------
    mode : {"central", "local"}
        ``dp``: where the noise is added.
    clip : float
        ``dp-clip``: L2 bound ``C`` of one client's update.
    noise : float
        ``dp-noise``: noise multiplier ``z`` (std ``z * C`` on a group's sum).
    delta : float
        ``dp-delta``: the delta epsilon is reported at.
    max_epsilon : float
        ``dp-max-epsilon``: the budget (0: none).
    noise_seed : int
        ``dp-noise-seed``: 0 draws a secret seed per run.
    population : int
        ``num-clients``: the sites rounds sample from.
    sample_size : int
        ``clients-per-round``: sites sampled per round.
    token_clip : float
        ``token-clip``: L2 bound of an identity token.
    token_noise : float
        ``token-noise``: noise multiplier of identity tokens (0: sent unnoised).
    """

    mode: str
    clip: float
    noise: float
    delta: float
    max_epsilon: float
    noise_seed: int
    population: int
    sample_size: int
    token_clip: float = 1.0
    token_noise: float = 0.0

    @classmethod
    def from_config(cls, config: RunConfig) -> PrivacySpec | None:
        """The spec of a run-config with DP or token noise on, else ``None``.

        ``mode`` is ``"off"`` when only the identity tokens are noised.
        """
        if config.dp == "off" and not config.token_noise:
            return None
        return cls(
            mode=config.dp,
            clip=config.dp_clip,
            noise=config.dp_noise,
            delta=config.dp_delta,
            max_epsilon=config.dp_max_epsilon,
            noise_seed=config.dp_noise_seed,
            population=config.num_clients,
            sample_size=config.clients_per_round,
            token_clip=config.token_clip,
            token_noise=config.token_noise,
        )


def update_norm(upload: Arrays, reference: Arrays) -> float:
    """L2 norm of ``upload - reference`` over all arrays (float64)."""
    return get_norm(
        [np.subtract(upload[k], reference[k], dtype=np.float64) for k in upload]
    )


def clip_upload(
    upload: Arrays, reference: Arrays, *, clip: float
) -> tuple[dict[str, np.ndarray], bool]:
    """``reference`` plus the update scaled to L2 norm at most ``clip``.

    Returns float64 arrays, so that the mean of clipped uploads minus the reference
    is the mean of the clipped updates without a float32 rounding of each
    (the strategies cast the final arrays back to their dtypes), and whether the
    update was scaled down.
    """
    keys = sorted(upload)
    update = [np.subtract(upload[k], reference[k], dtype=np.float64) for k in keys]
    norm = get_norm(update)
    if norm > clip:  # (Flower's helper divides by the norm: skip a zero update)
        clip_inputs_inplace(update, clip)
    clipped = {
        k: np.asarray(reference[k], dtype=np.float64) + u
        for k, u in zip(keys, update, strict=True)
    }
    return clipped, norm > clip


def noise_std(*, noise: float, clip: float, count: int) -> float:
    """Standard deviation ``z * C / n`` of the noise on the mean of ``n`` updates."""
    return compute_stdv(noise, clip, count)


def group_seed(
    *, noise_seed: int, stage: int, server_round: int, group: str
) -> list[int]:
    """The seed of one group's noise in one round (a stable hash of its name)."""
    return [noise_seed, stage, server_round, zlib.crc32(group.encode())]


def add_noise(
    averaged: Arrays,
    *,
    std: float,
    seed: list[int] | None,
) -> dict[str, np.ndarray]:
    """``averaged`` plus seeded Gaussian noise of ``std`` on every entry (float64).

    Arrays are visited in sorted key order, so the noise of a key does not depend
    on the order a strategy built its dictionary in. ``seed=None``: fresh entropy.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for key in sorted(averaged):
        value = np.asarray(averaged[key], dtype=np.float64)
        out[key] = value + std * rng.standard_normal(value.shape)
    return out


def privatize_locally(
    upload: Arrays,
    received: Arrays,
    *,
    clip: float,
    noise: float,
    seed: list[int] | None,
) -> dict[str, np.ndarray]:
    """Local DP: ``upload`` clipped against ``received``, plus noise of std ``z C``.

    The arrays keep their dtypes (the server checks them). ``seed=None`` draws
    fresh entropy: a seed the server can know would let it remove the noise.
    """
    clipped, _ = clip_upload(upload, received, clip=clip)
    noised = add_noise(clipped, std=noise * clip, seed=seed)
    return {k: noised[k].astype(upload[k].dtype) for k in upload}


def local_seed(noise_seed: int, *coordinates: int) -> list[int] | None:
    """A client's noise seed: ``None`` (fresh entropy) unless ``dp-noise-seed`` is set.

    A fixed seed is in the run-config, which the server reads: tests only.
    """
    return [noise_seed, *coordinates] if noise_seed else None


# Keeps token noise apart from update noise under one ``dp-noise-seed``.
_TOKEN_STREAM = zlib.crc32(b"identity-token")


def token_seed(noise_seed: int, *, stage: int, position: int) -> list[int] | None:
    """The seed of a site's token noise at ``stage`` (as :func:`local_seed`).

    One seed per (site, stage): a site asked again in the same stage resends
    the same noised token.
    """
    return local_seed(noise_seed, _TOKEN_STREAM, stage, position)


def privatize_token(
    token: np.ndarray, *, clip: float, noise: float, seed: list[int] | None
) -> np.ndarray:
    """An identity token clipped to L2 norm ``clip`` plus noise of std ``noise * clip``.

    The Gaussian mechanism on the client (local DP of the token): replacing a
    site's data moves its clipped token by at most ``2 * clip``, so one release
    is a Gaussian event of multiplier ``noise / 2`` (the ledger's replace-one
    convention). Returns float32 (what the server checks).
    """
    value = np.asarray(token, dtype=np.float64)
    noised = privatize_locally(
        {"token": value},
        {"token": np.zeros_like(value)},
        clip=clip,
        noise=noise,
        seed=seed,
    )
    return noised["token"].astype(np.float32)


def noised_token_bound(*, clip: float, noise: float, dimension: int) -> float:
    """An L2 norm an honest noised token exceeds with probability below 1e-21.

    ``||clipped + e|| <= C + ||e||`` and ``||e|| / (z C)`` is chi with ``d``
    degrees of freedom, above ``sqrt(d) + t`` with probability at most
    ``exp(-t^2 / 2)`` (Gaussian concentration of a 1-Lipschitz function); t = 10.
    """
    return float(clip * (1.0 + noise * (np.sqrt(dimension) + 10.0)))
