"""A site's own settings: which run-config keys a SuperNode's node-config replaces.

The run config is the coordinator's: its paths name the coordinator's files, its
device and precision the coordinator's hardware. A site sets its own in the
``--node-config`` of its SuperNode (``data-root``, ``model-path``, ...); the
ClientApp builds its :class:`~fcit_flower.config.RunConfig` from the run config
with those keys replaced, so a site never needs a path of the coordinator and a
CPU site can join GPU sites. Everything else (method, schedule, hyper-parameters,
seeds) stays the run's: sites must train the same thing.

A node-config ``data-root`` also means the site trains on *its own* data (every
train record of the stage's tasks there) instead of a partition of a shared data
root; a site then needs only the train files of the tasks it learns, and the test
sets stay with the coordinator, whose server does all evaluation.

Pure logic: no torch, no Flower training imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fcit_flower.config import ConfigError, RunConfig

SITE_PATH_KEYS = ("data-root", "model-path", "identity-encoder-path", "image-root")
"""Paths a site gives for its own machine (the base and the CLIP encoder at a
site's own path are fingerprinted at discovery and must equal the server's; a
``schedule-file`` is not one of them: every site must follow the run's schedule,
so that file must be at its run-config path on every site)."""

SITE_HARDWARE_KEYS = ("device", "quantization", "torch-dtype")
"""How a site runs the base on its own hardware. Device and dtype change the
numbers by rounding; 4- or 8-bit quantization trains a different (quantized)
model: the server names every site whose settings differ from the run's."""

SITE_LOCAL_KEYS = SITE_PATH_KEYS + SITE_HARDWARE_KEYS
"""Every run-config key a node-config may replace."""

# Node-config keys that are not run-config keys: the site's position.
POSITION_KEYS = ("partition-id", "num-partitions", "site-id")


def site_values(
    run_config: Mapping[str, Any], node_config: Mapping[str, Any]
) -> dict[str, Any]:
    """The run config with the node's site-local keys in place of the coordinator's.

    Other node-config keys (the position, Flower's own) are not run-config keys and
    are left out; nothing of the run config but :data:`SITE_LOCAL_KEYS` changes.
    """
    values = dict(run_config)
    for key in SITE_LOCAL_KEYS:
        if key in node_config:
            values[key] = node_config[key]
    return values


def site_run_config(
    run_config: Mapping[str, Any], node_config: Mapping[str, Any], position: int
) -> RunConfig:
    """The site's :class:`RunConfig`: run config + its own site-local settings.

    Raises
    ------
    ValueError
        One line naming the site and the bad key; a path that came from the
        coordinator's run config says so and names the node-config key that
        replaces it.
    """
    try:
        return RunConfig.from_mapping(site_values(run_config, node_config))
    except ConfigError as error:
        key = str(error).split("=", 1)[0].strip()
        where = (
            f" (the coordinator's path; give this site's own with node-config {key})"
            if key in SITE_PATH_KEYS and key not in node_config
            else ""
        )
        raise ValueError(f"site {position}: {error}{where}") from None


def clip_path(config: RunConfig) -> str:
    """The CLIP checkpoint identity tokens come from ("" for MiniLM's tokens)."""
    return config.identity_encoder_path if config.identity_encoder == "clip" else ""


def hardware_differences(settings: str, run_config: RunConfig) -> list[str]:
    """``key=value (the run's: other)`` for each hardware key a site set otherwise.

    ``settings``: what the site reported (:func:`site_settings`).
    """
    out = []
    for item in settings.split():
        key, _, value = item.partition("=")
        if key in SITE_HARDWARE_KEYS:
            run = str(getattr(run_config, key.replace("-", "_")))
            if value.strip('"') != run:
                out.append(f"{key}={value} (the run's: {run})")
    return out


def site_settings(node_config: Mapping[str, Any]) -> str:
    """The site-local keys a node sets, as ``key=value ...`` (for the site report)."""
    return " ".join(
        f"{key}={node_config[key]}" for key in SITE_LOCAL_KEYS if key in node_config
    )
