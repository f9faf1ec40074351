"""A site's long-lived worker: same numbers as a ClientApp process per message,
torch imported once, one-line errors when it is missing or a handler fails."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fcit_flower.inprocess import run_inprocess, small_run_config
from fcit_flower.site_worker import WORKER_KEY, ask_worker, listen

ROOT = Path(__file__).resolve().parents[1]
SMALL = {
    **small_run_config(
        clients=2, per_round=2, train_size=12, test_size=4, min_client_size=2
    ),
    "rounds-per-stage": 1,
}


def _start_worker(path: Path) -> subprocess.Popen:
    worker = subprocess.Popen(
        [sys.executable, "-m", "fcit_flower.site_worker", "--socket", str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert worker.stdout is not None
    assert "listening" in worker.stdout.readline()
    return worker


def test_runs_through_site_workers_equal_runs_without(tmp_path):
    workers = [_start_worker(tmp_path / f"site-{k}.sock") for k in (0, 1)]
    try:
        nodes = [
            {
                "partition-id": k,
                "num-partitions": 2,
                WORKER_KEY: str(tmp_path / f"site-{k}.sock"),
            }
            for k in (0, 1)
        ]
        common = {**SMALL, "method": "disco", "results-dir": str(tmp_path)}
        run_inprocess({**common, "run-name": "worker"}, nodes)
        run_inprocess({**common, "run-name": "plain"})
    finally:
        for worker in workers:
            worker.terminate()
        logs = [worker.communicate(timeout=30)[0] for worker in workers]
    runs = {
        name: json.loads((tmp_path / name / "metrics.json").read_text())
        for name in ("worker", "plain")
    }
    assert runs["worker"]["accuracy_matrix"] == runs["plain"]["accuracy_matrix"]
    for log in logs:  # each site's worker did its site's work
        assert log.count("site worker: train ok") == 2  # 2 stages x 1 round
        assert "site worker: query ok" in log  # discovery and identity tokens


def test_a_missing_worker_and_a_failing_handler_are_one_line_errors(tmp_path):
    from flwr.app import ConfigRecord, RecordDict

    from fcit_flower.protocol import CONFIG_KEY, DESCRIBE, KIND

    content = RecordDict({CONFIG_KEY: ConfigRecord({KIND: DESCRIBE})})
    gone = str(tmp_path / "none.sock")
    with pytest.raises(ValueError, match=r"site worker .*none.sock.* not reachable"):
        ask_worker(gone, "query", content, SMALL, {"site-id": 0})
    path = tmp_path / "w.sock"
    worker = _start_worker(path)
    try:
        assert path.stat().st_mode & 0o777 == 0o600  # only the site's user
        with pytest.raises(ValueError, match=r"^site 7 \(node-config site-id\)"):
            ask_worker(str(path), "query", content, SMALL, {"site-id": 7})
        reply = ask_worker(str(path), "query", content, SMALL, {"site-id": 1})
        assert reply.config_records[CONFIG_KEY]["partition-id"] == 1
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_a_second_worker_on_the_same_socket_is_refused(tmp_path):
    path = tmp_path / "w.sock"
    first = listen(path)
    try:
        with pytest.raises(OSError, match="already listens"):
            listen(path)
    finally:
        first.close()
    listen(path).close()  # a stale socket file (nobody listening) is replaced
