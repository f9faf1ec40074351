"""The runs a command asks for: parsed flags, run-config overrides, validated configs.

Everything here runs before any SuperLink or Ray starts, and every bad input ends in
a :class:`~fcit_flower.config.ConfigError` with one line naming the flag or key:
``compare``'s comma-separated lists, ``--run-config`` keys that a flag sets,
duplicate runs, and ``resume``'s overrides (operational keys only).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fcit_flower.checkpoint import OPERATIONAL_KEYS, absolute_paths
from fcit_flower.config import ConfigError, RunConfig

# Run-config keys that ``compare`` sets itself, and the flag that sets each.
COMPARE_FLAGS = {
    "method": "--methods",
    "seed": "--seeds",
    "beta": "--beta",
    "scenario": "--scenario",
    "setting": "--setting",
    "results-dir": "--results-dir",
    "run-name": "--methods and --seeds (runs are named <method>-s<seed>)",
    "resume": "--resume",
}


def parse_overrides(text: str) -> dict[str, Any]:
    """Parse ``"key=value key2=value2"`` run-config overrides (TOML-ish values).

    Raises
    ------
    ConfigError
        For an item that is not ``key=value``, or a key given twice.
    """
    out: dict[str, Any] = {}
    for item in text.split():
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        if key in out:
            raise ConfigError(f"override key {key!r} is given twice")
        out[key] = _parse_value(raw)
    return out


def _parse_value(raw: str) -> Any:
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except (ValueError, OverflowError):
            pass
    return raw.strip("'\"")


def flag_items(flag: str, text: str) -> list[str]:
    """The comma-separated items of ``flag``; none may be empty.

    Raises
    ------
    ConfigError
        For an empty list or an empty item.
    """
    items = [item.strip() for item in str(text).split(",")]
    if not any(items):
        raise ConfigError(f"{flag} is empty; give one or more comma-separated values")
    if not all(items):
        raise ConfigError(f"{flag}={text!r} has an empty item")
    return items


def _numbers(flag: str, text: str, kind: type) -> list[Any]:
    out = []
    for item in flag_items(flag, text):
        try:
            out.append(kind(item))
        except (ValueError, OverflowError):
            what = "an integer" if kind is int else "a number"
            raise ConfigError(f"{flag}: {item!r} is not {what}") from None
    return out


def plan_runs(args: argparse.Namespace) -> list[tuple[str, RunConfig]]:
    """Validated configs of every (combination, method, seed) run of ``compare``.

    Raises
    ------
    ConfigError
        For a bad flag value, a ``--run-config`` key that a flag sets, an unknown
        method, a duplicate run, or a run-config value out of range.
    """
    from fcit_flower.methods.registry import get_method  # imports torch: not for --help

    overrides = parse_overrides(args.run_config or "")
    for key in overrides:
        if key in COMPARE_FLAGS:
            raise ConfigError(
                f"--run-config sets {key!r}, which compare sets itself; use "
                f"{COMPARE_FLAGS[key]} instead"
            )
    methods = flag_items("--methods", args.methods)
    for method in methods:
        try:
            get_method(method)
        except ConfigError as error:
            raise ConfigError(f"--methods: {error}") from None
    seeds = _numbers("--seeds", args.seeds, int)
    betas = _numbers("--beta", args.beta, float)
    scenarios = flag_items("--scenario", args.scenario)
    settings = flag_items("--setting", args.setting)
    results = Path(args.results_dir).expanduser().resolve()
    overrides = absolute_paths(overrides)  # the ServerApp runs in another directory
    runs: list[tuple[str, RunConfig]] = []
    seen: set[Path] = set()
    for scenario in scenarios:
        for setting in settings:
            for beta in betas:
                combo = f"{scenario}-{setting}-b{beta:g}"
                for method in methods:
                    for seed in seeds:
                        values = {
                            **overrides,
                            "method": method,
                            "scenario": scenario,
                            "setting": setting,
                            "beta": beta,
                            "seed": seed,
                            "results-dir": str(results / combo),
                            "run-name": f"{method}-s{seed}",
                        }
                        config = RunConfig.from_mapping(values)
                        # the method's own limits (DP support, rank splits) too
                        get_method(method).check_config(config)
                        if config.run_dir in seen:
                            raise ConfigError(
                                f"run {combo}/{config.run_name} is planned twice; "
                                "list each method, seed, beta, scenario and "
                                "setting once"
                            )
                        seen.add(config.run_dir)
                        runs.append((combo, config))
    return runs


def resume_overrides(text: str) -> dict[str, Any]:
    """``resume``'s ``--run-config``: operational keys only.

    Retries, timeouts, checkpoint count and fault injection (off only) may change;
    a key that alters results may not.

    Raises
    ------
    ConfigError
        For any other key, or fault injection switched on.
    """
    overrides = parse_overrides(text)
    for key, value in overrides.items():
        if key not in OPERATIONAL_KEYS:
            raise ConfigError(
                f"resume cannot change {key!r} (it would alter the results); "
                f"only {sorted(OPERATIONAL_KEYS)} may change"
            )
        if key == "fault-rate" and value != 0:
            raise ConfigError(
                "resume can only switch fault injection off (fault-rate=0)"
            )
    return overrides
