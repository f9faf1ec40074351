"""A client's side of every method: what the ClientApp does with each message.

The ClientApp (:mod:`fcit_flower.client_app`) calls :func:`handle_query` and
:func:`handle_train` in its own process, or has a long-lived site worker call them
(:mod:`fcit_flower.site_worker`). Both take the message's content and the node's
context and return the reply's content.

Messages (keys in :mod:`fcit_flower.protocol`):

- QUERY ``kind=describe``: replies the client position (``partition-id``).
- TRAIN: the method's :meth:`~fcit_flower.methods.base.Method.train_client` on this
  client's samples for the stage; reply ``arrays`` (the update) and ``metrics``
  (``num-examples``, ``train-loss``, ``client-seconds`` and the method's own).
- Any other QUERY: the method's
  :meth:`~fcit_flower.methods.base.Method.answer_query` (DISCO: identity token).

Per-site settings (deployment): the node config gives the client position as
``partition-id`` (what simulation sets) or ``site-id``, and may replace the run
config's paths, device and precision with the site's own
(:mod:`fcit_flower.site_config`); with a ``data-root`` key the site trains on all
of its own directory's train data for the stage's tasks instead of a partition of
the shared data root, and needs no test file. A bad site (missing directory or
file, position outside the schedule) raises a one-line error naming the site,
which Flower returns to the ServerApp as the reply's error.
"""

from __future__ import annotations

import time
from pathlib import Path

from flwr.app import (
    ConfigRecord,
    Context,
    MetricRecord,
    RecordDict,
)

from fcit_flower.config import RunConfig
from fcit_flower.faults import INJECTED, InjectedFault, corrupt, should_fail
from fcit_flower.methods.base import ClientSetup, ClientUpdate, Method
from fcit_flower.methods.registry import get_method
from fcit_flower.privacy import local_seed, privatize_locally
from fcit_flower.protocol import (
    ARRAYS_KEY,
    ATTEMPT,
    BASE_FINGERPRINT,
    CLIENT_SECONDS,
    CONFIG_KEY,
    DATA_FINGERPRINT,
    DESCRIBE,
    KIND,
    METRICS_KEY,
    NUM_EXAMPLES,
    PARTITION_ID,
    SERVER_ROUND,
    SITE_SETTINGS,
    STAGE,
    TRAIN_LOSS,
    VERSIONS,
    read_int,
)
from fcit_flower.runtime import prepare_runtime
from fcit_flower.site_config import clip_path, site_run_config, site_settings
from fcit_flower.tasks.data import config_load_task, data_root_path, require_task_files
from fcit_flower.tasks.fcit_data import DataError, Sample
from fcit_flower.tasks.schedule import Schedule, make_schedule
from fcit_flower.transport import decode_arrays, encode_arrays


def client_position(context: Context, num_clients: int | None = None) -> int:
    """Return the client position: ``partition-id`` or ``site-id`` of the node.

    Parameters
    ----------
    context : Context
        The ClientApp context; its node config names the position.
    num_clients : int, optional
        Clients of the schedule; a position outside ``[0, num_clients)`` is refused.

    Returns
    -------
    int
        The position.

    Raises
    ------
    ValueError
        When the node config names no position, or one outside the schedule.
    """
    node = context.node_config
    key = "partition-id" if "partition-id" in node else "site-id"
    if key not in node:
        raise ValueError(
            "node-config lacks 'partition-id' or 'site-id' (the client position)"
        )
    try:
        position = int(node[key])  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"node-config {key}={node[key]!r} is not an integer") from None
    if position < 0 or (num_clients is not None and position >= num_clients):
        raise ValueError(
            f"site {position} (node-config {key}) is not in the schedule: "
            f"num-clients={num_clients}"
        )
    return position


def site_data_root(context: Context, position: int) -> Path | None:
    """The node's own data directory (node-config ``data-root``), if it has one.

    Raises
    ------
    ValueError
        When the configured directory does not exist.
    """
    value = context.node_config.get("data-root", "")
    if not value:
        return None
    root = Path(str(value)).expanduser()
    if not root.is_dir():
        raise ValueError(
            f"site {position}: node-config data-root '{root}' is not a directory"
        )
    return root.resolve()


def site_context(context: Context) -> tuple[RunConfig, int]:
    """The site's config (run config + its node-config settings) and position."""
    position = client_position(context)
    config = site_run_config(context.run_config, context.node_config, position)
    return config, client_position(context, config.num_clients)


def site_tasks(method: Method, config: RunConfig, position: int) -> list[str]:
    """Every task the site learns in some stage of the run."""
    schedule = method.schedule(make_schedule(config))
    stages = range(schedule.num_stages)
    found = {t for s in stages for t in schedule.client_tasks(s, position)}
    return sorted(found)


def site_samples(
    method: Method,
    config: RunConfig,
    schedule: Schedule,
    root: Path,
    own: Path | None,
    stage: int,
    position: int,
) -> list[Sample]:
    """Return the site's training samples for ``stage``.

    With a node ``data-root`` (``own``): every train sample of the stage's tasks in
    that directory (the site holds only its own data). Otherwise: the site's
    partition of the shared data ``root``, exactly as in simulation.
    """
    if own is None:
        return method.client_samples(config, schedule, root, stage, position)
    tasks = schedule.client_tasks(stage, position)
    try:
        return [
            s for task in tasks for s in config_load_task(config, own, task, "train")
        ]
    except (OSError, ValueError) as err:
        raise ValueError(f"site {position}: cannot read {own}: {err}") from None


def client_setup(
    method: Method,
    config: RunConfig,
    context: Context,
    request: ConfigRecord,
    position: int,
) -> ClientSetup:
    """What the method's client side gets for one message of this node.

    With its own data a site needs only the train files of its own tasks (checked
    at discovery); on a shared root, the train file of every task.
    """
    own = site_data_root(context, position)
    runtime = prepare_runtime(config, () if own is not None else ("train",))
    schedule = method.schedule(runtime.schedule)
    stage = read_int(request, STAGE)
    return ClientSetup(
        config=config,
        runtime=runtime,
        request=request,
        position=position,
        samples=site_samples(
            method, config, schedule, runtime.root, own, stage, position
        ),
        tasks=schedule.client_tasks(stage, position),
    )


def handle_query(content: RecordDict, context: Context) -> RecordDict:
    """Describe this client, or let the method answer (DISCO: identity token)."""
    config, position = site_context(context)
    request = content.config_records[CONFIG_KEY]
    method = get_method(config.method)
    if request.get(KIND) == DESCRIBE:
        # A bad site fails here, at discovery, before any training.
        own = site_data_root(context, position)
        tasks = site_tasks(method, config, position)
        if own is not None:
            try:
                require_task_files(own, tasks, ("train",))
            except DataError as err:
                raise ValueError(f"site {position}: {err}") from None
        report = site_report(config, position, own, tasks)
        report[SITE_SETTINGS] = site_settings(context.node_config)
        return RecordDict({CONFIG_KEY: report})
    setup = client_setup(method, config, context, request, position)
    return method.answer_query(setup)


def site_report(
    config: RunConfig, position: int, own: Path | None, tasks: list[str]
) -> ConfigRecord:
    """What a site says of itself at discovery: position, base, data, versions.

    The base is fingerprinted only if it is built here (a site builds or checks it
    beforehand with ``fcit-flower base``), the data only if it exists here (the
    site's own, or the shared root): discovery never waits for a build. The data
    fingerprint is one digest of the train files of the site's tasks.
    """
    from fcit_flower.report.manifest import (
        PACKAGES,
        combined_digest,
        data_fingerprints,
        model_fingerprint,
        package_versions,
    )
    from fcit_flower.runtime import built_base_path

    base = built_base_path(config)
    names = ("fcit-flower", *PACKAGES)
    versions = " ".join(f"{k}={v}" for k, v in package_versions(names).items())
    root = own if own is not None else data_root_path(config)
    files = data_fingerprints(root, tasks, ("train",)) if root.is_dir() else {}
    digests = {t: d["train"] for t, d in files.items() if d["train"]}
    return ConfigRecord(
        {
            PARTITION_ID: position,
            BASE_FINGERPRINT: (
                "" if base is None else model_fingerprint(base, clip_path(config))
            ),
            VERSIONS: versions,
            DATA_FINGERPRINT: combined_digest(digests) if digests else "",
        }
    )


def handle_train(content: RecordDict, context: Context) -> RecordDict:
    """Train the received adapter on this client's partition for the stage."""
    started = time.perf_counter()
    config, position = site_context(context)
    method = get_method(config.method)
    request = content.config_records[CONFIG_KEY]
    stage = read_int(request, STAGE)
    server_round = read_int(request, SERVER_ROUND)
    attempt = read_int(request, ATTEMPT, 0)
    faulty = should_fail(
        config.fault_rate, config.fault_seed, stage, server_round, position, attempt
    )
    if faulty:
        INJECTED.append((config.fault_kind, stage, server_round, position, attempt))
    if faulty and config.fault_kind == "error":
        raise InjectedFault(
            f"injected fault (fault-rate={config.fault_rate}): stage {stage + 1} "
            f"round {server_round} client {position} attempt {attempt}"
        )
    setup = client_setup(method, config, context, request, position)
    transport = config.transport_dtype
    received = decode_arrays(content.array_records[ARRAYS_KEY], transport=transport)
    update = method.train_client(setup, received)
    if config.dp == "local":  # nothing unnoised leaves the site
        seed = local_seed(config.dp_noise_seed, stage, server_round, position, attempt)
        noised = privatize_locally(
            update.arrays,
            received,
            clip=config.dp_clip,
            noise=config.dp_noise,
            seed=seed,
        )
        update = ClientUpdate(noised, update.loss, update.metrics)
    if faulty:
        update = ClientUpdate(
            corrupt(update.arrays, config.fault_kind), update.loss, update.metrics
        )
    metrics: dict[str, int | float | list[int] | list[float]] = {
        NUM_EXAMPLES: len(setup.samples),
        TRAIN_LOSS: update.loss,
        # Handler time (model from cache, data, training, state): the bench splits
        # a round into this and the rest (messaging, scheduling, aggregation).
        CLIENT_SECONDS: time.perf_counter() - started,
        **update.metrics,
    }
    # In 16 bits the upload is the update against what arrived (the rounded
    # global the client trained from); the server adds it to what it sent.
    arrays = encode_arrays(update.arrays, transport=transport, reference=received)
    return RecordDict({ARRAYS_KEY: arrays, METRICS_KEY: MetricRecord(metrics)})


def forget_loaded() -> None:
    """Drop every base, model copy, encoder and data split this process holds.

    A site worker serves run after run: a later run may load the base with other
    options, and the site's base or data may have changed in between (discovery
    fingerprints the files on disk: what a run trains on must be read anew).
    """
    from fcit_flower.methods.moelora import forget_models
    from fcit_flower.models.adapters import forget_bases
    from fcit_flower.models.identity import get_encoder
    from fcit_flower.tasks.data import load_task
    from fcit_flower.training import forget_images

    prepare_runtime.cache_clear()
    for cached in (get_encoder, load_task):
        cached.cache_clear()
    forget_bases()
    forget_images()
    forget_models()


HANDLERS = {"query": handle_query, "train": handle_train}
"""Message kind -> its handler ``(content, context) -> reply content``."""
