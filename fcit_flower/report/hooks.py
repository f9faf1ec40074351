"""What the ServerApp calls: the manifest at the start, the report at the end."""

from __future__ import annotations

import json
import time
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

from flwr.common import log

from fcit_flower.report.manifest import build_manifest
from fcit_flower.results import atomic_write_json

APP_DIR = Path(__file__).resolve().parents[2]


def add_sites_to_manifest(run_dir: Path, sites: dict[str, Any]) -> None:
    """Record in ``manifest.json`` what every site reported at discovery.

    The manifest's own data and base hashes are the coordinator's; in a deployment
    each site reports its base, data and versions, which go under ``sites``.
    """
    path = Path(run_dir) / "manifest.json"
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    manifest["sites"] = sites
    atomic_write_json(path, manifest)


def write_manifest(config: Any, runtime: Any) -> Path:
    """Write the run's ``manifest.json``: config, versions, commit, data hashes.

    Parameters
    ----------
    config : RunConfig
        The run's validated config.
    runtime : Runtime
        Its data root and schedule.

    Returns
    -------
    Path
        The manifest written.
    """
    path = Path(config.run_dir) / "manifest.json"
    manifest = build_manifest(
        config.to_mapping(),
        data_root=runtime.root,
        tasks=runtime.schedule.tasks,
        app_dir=APP_DIR,
        base_path=runtime.base_path,
    )
    atomic_write_json(path, manifest)
    return path


def write_report_logged(run_dir: Path) -> Path | None:
    """Write the run's plots and report; a failure is logged, not raised.

    The run's numbers are already on disk when this is called: a plotting problem
    must not turn a finished run into a failed one. ``fcit-flower report`` rebuilds
    the report later.
    """
    from fcit_flower.report.run_report import write_run_report

    started = time.perf_counter()
    try:
        path = write_run_report(Path(run_dir))
    except Exception as error:  # noqa: BLE001 - see the docstring
        log(WARNING, "report of %s not written: %r", run_dir, error)
        return None
    log(INFO, "report written in %.2f s: %s", time.perf_counter() - started, path)
    return path
