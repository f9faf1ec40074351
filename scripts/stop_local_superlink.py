"""Stop the SuperLink (and its SuperExec) that a plain ``flwr run`` left running.

Usage: ``python scripts/stop_local_superlink.py`` (``$FLWR_HOME`` as for ``flwr``).
Only Flower's managed local SuperLink of this user is stopped
(:mod:`fcit_flower.launch.local_superlink`).
"""

from __future__ import annotations

import sys

from fcit_flower.launch.local_superlink import managed_log_file, stop_managed_superlinks


def main() -> int:
    """Stop them; say what was stopped."""
    stopped = stop_managed_superlinks()
    if not stopped:
        print(f"no managed local SuperLink running (log: {managed_log_file()})")
    for pid in stopped:
        print(f"stopped the local SuperLink (pid {pid}) and what it started")
    return 0


if __name__ == "__main__":
    sys.exit(main())
