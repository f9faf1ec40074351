"""``fcit-flower dp-noise``: the noise multiplier that spends a given epsilon.

Client-level DP is configured by its noise multiplier ``dp-noise``; what a site
asks for is an epsilon. This command runs the run's own accountant
(:func:`~fcit_flower.strategies.dp_calibration.noise_for_epsilon`: its sampling of
``clients-per-round`` of ``num-clients``, its stages and rounds, ``dp-delta``)
backwards and prints the smallest ``dp-noise`` whose releases over the whole
schedule stay within the epsilon. Identity-token noise is accounted apart.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from fcit_flower.config import RunConfig


def add_dp_command(sub: Any) -> None:
    """Add ``dp-noise`` to the CLI's sub-parsers."""
    command = sub.add_parser(
        "dp-noise",
        help="print the dp-noise that spends a target epsilon over a run",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    command.add_argument(
        "--epsilon",
        required=True,
        help="target epsilon(s) at dp-delta, comma-separated",
    )
    command.add_argument(
        "--run-config",
        default="",
        help="the run's overrides ('num-clients=50 clients-per-round=5 dp-delta=1e-6'"
        "); dp='off' is read as 'central'",
    )


def noise_for_run(config: RunConfig, epsilon: float) -> float:
    """``dp-noise`` within ``epsilon`` over ``config``'s whole schedule.

    Rounded up to 4 significant digits, so the printed value itself stays within
    the epsilon. ``dp = "off"`` is read as ``"central"``.
    """
    from fcit_flower.privacy import PrivacySpec
    from fcit_flower.strategies.dp_calibration import noise_for_epsilon

    if config.dp == "off":
        config = config.replace(dp="central")
    spec = PrivacySpec.from_config(config)
    assert spec is not None  # dp is on
    noise = noise_for_epsilon(spec, epsilon=epsilon, rounds=schedule_rounds(config))
    scale = 10 ** (3 - math.floor(math.log10(noise)))
    return math.ceil(noise * scale) / scale


def schedule_rounds(config: RunConfig) -> int:
    """Rounds of ``config``'s run: its stages times ``rounds-per-stage``."""
    from fcit_flower.tasks.schedule import make_schedule

    return make_schedule(config).num_stages * config.rounds_per_stage


def dp_noise_command(args: argparse.Namespace) -> int:
    """The ``dp-noise`` command: one line per target epsilon."""
    from fcit_flower.config import ConfigError
    from fcit_flower.launch.plan import parse_overrides

    targets = []
    for text in args.epsilon.split(","):
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not value > 0 or value == float("inf"):
            raise ConfigError(f"--epsilon {text!r}: must be a finite number > 0")
        targets.append(value)
    config = RunConfig.from_mapping(parse_overrides(args.run_config))
    mode = "central" if config.dp == "off" else config.dp
    print(
        f"dp={mode!r}: {schedule_rounds(config)} rounds, {config.clients_per_round} "
        f"of {config.num_clients} sites per round, dp-delta={config.dp_delta:g}"
    )
    for target in targets:
        print(f"epsilon {target:g}: dp-noise={noise_for_run(config, target):g}")
    return 0
