"""Cost of loading the base per message vs once per worker process (lru cache).

Each simulated ClientApp runs in a Ray actor process that handles many messages;
``load_base`` and ``adapted_model`` are cached per process, so only the first message
pays for reading the weights and wrapping them in PEFT. This measures the tiny base:
a reload (weights from disk + PEFT wrap) against the cached call. Median of repeats.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

from peft import get_peft_model

from bench.common import median_seconds, record
from fcit_flower.config import RunConfig
from fcit_flower.models.adapters import adapted_model, load_base, lora_config
from fcit_flower.models.tiny import load_tiny_base
from fcit_flower.runtime import prepare_runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    path = prepare_runtime(RunConfig()).base_path

    def reload() -> None:
        model, _ = load_tiny_base(Path(path))
        get_peft_model(copy.deepcopy(model), lora_config(32, 2.0, 0.05))

    def cached() -> None:
        load_base(path)
        adapted_model(path, 32, 2.0, 0.05)

    cached()
    reload_s = median_seconds(reload, args.repeats)
    cached_s = median_seconds(cached, args.repeats)
    rows = [
        "| what | median ms |",
        "|---|---|",
        f"| reload: weights from disk + deepcopy + PEFT wrap | {1e3 * reload_s:.1f} |",
        f"| cached: `load_base` + `adapted_model` (lru) | {1e3 * cached_s:.4f} |",
    ]
    body = "\n".join(rows) + (
        f"\n\nTiny base, {args.repeats} repeats; a client message that reloaded would "
        f"pay {1e3 * (reload_s - cached_s):.0f} ms more (not counting imports)."
    )
    print(body)
    record("Base model: reload per message vs cached per worker process", body)


if __name__ == "__main__":
    main()
