"""Data-parallel training in several processes with TensorFlow's ``MultiWorkerMirroredStrategy``.

Every process reads ``TF_CONFIG`` (what Kubernetes TFJob, Slurm scripts and ``ecgvgg run
--workers N`` set): the cluster's workers and this process's task. Each worker trains the same
model on its own part of every batch (tf.data shards the training batches by worker), and the
strategy all-reduces the gradients; the weights stay identical. Worker 0 is the chief: only it
logs to MLflow and writes models.

Keras 3 (up to at least 3.15) cannot run ``model.fit`` under this strategy as it is
(keras-team/keras#20585): ``_maybe_symbolic_build`` reduces a per-replica batch, and
``reduce_per_replica`` takes a MEAN over axis 0 of scalar metrics. :func:`fit_workaround` is
the smallest fix: build the model on a local batch, skip that reduction, and reduce scalars with
``axis=None``, for the duration of one ``fit``. It is applied only when Keras is at most
:data:`LAST_BROKEN_KERAS`; delete it when upstream is fixed.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from typing import Any

#: The newest Keras checked to need :func:`fit_workaround`.
LAST_BROKEN_KERAS = (3, 15)


def cluster() -> dict[str, Any] | None:
    """``TF_CONFIG`` when it names more than one worker, else None (a single process)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    config = json.loads(raw)
    workers = sum(len(v) for k, v in config.get("cluster", {}).items() if k in ("worker", "chief"))
    return config if workers > 1 else None


def is_chief() -> bool:
    """Whether this process logs and saves: the only process, the ``chief`` task, or worker 0 without one."""
    config = cluster()
    if config is None:
        return True
    task = config.get("task", {})
    if "chief" in config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


def worker_count() -> int:
    """Processes training together (1 without a cluster)."""
    config = cluster()
    return 1 if config is None else sum(len(v) for k, v in config["cluster"].items() if k in ("worker", "chief"))


def worker_rank() -> int:
    """This process's place among the workers (0 without a cluster; the chief, when there is one, is 0)."""
    config = cluster()
    if config is None:
        return 0
    task, tasks = config.get("task", {}), config["cluster"]
    before = len(tasks.get("chief", [])) if task.get("type") == "worker" else 0
    return before + int(task.get("index", 0))


def local_configs(n: int) -> list[str]:
    """``TF_CONFIG`` values for ``n`` workers on free ports of 127.0.0.1, worker 0 first."""
    ports = []
    for _ in range(n):
        with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    workers = [f"127.0.0.1:{p}" for p in ports]
    return [json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}) for i in range(n)]


_STRATEGY: Any = None


def multi_worker_strategy() -> Any:
    """The process's one ``MultiWorkerMirroredStrategy`` (it can be created only once)."""
    global _STRATEGY
    if _STRATEGY is None:
        import tensorflow as tf

        _STRATEGY = tf.distribute.MultiWorkerMirroredStrategy()
    return _STRATEGY


def needs_workaround() -> bool:
    """Whether this Keras is one that fails ``model.fit`` under a multi-worker strategy (keras#20585)."""
    import keras

    version = tuple(int(p) for p in keras.__version__.split(".")[:2])
    return cluster() is not None and version <= LAST_BROKEN_KERAS


@contextmanager
def fit_workaround(model: Any, sample_batch: Callable[[], Any]) -> Iterator[None]:
    """Let ``model.fit`` run under ``MultiWorkerMirroredStrategy`` on the Keras versions of keras#20585;
    ``sample_batch()`` gives one local training batch to build the model on."""
    if not needs_workaround():
        yield
        return
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    strategy = model.distribute_strategy
    with strategy.scope():
        model._symbolic_build(data_batch=sample_batch())  # on a local batch: nothing to reduce
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    original = trainer.reduce_per_replica

    def reduce_scalars(values: Any, strategy: Any, reduction: str) -> Any:
        if trainer._collective_all_reduce_multi_worker(strategy) and reduction in ("auto", "mean"):
            return tf.nest.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None) if trainer._is_per_replica_instance(v) else v, values
            )
        return original(values, strategy, reduction)

    trainer.reduce_per_replica = reduce_scalars
    try:
        yield
    finally:
        trainer.reduce_per_replica = original
        del model._maybe_symbolic_build


def local_gpus() -> list[str]:
    """This machine's GPUs as ``CUDA_VISIBLE_DEVICES`` ids (that variable's, else ``nvidia-smi -L``'s), without TensorFlow."""
    import shutil
    import subprocess

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [v.strip() for v in visible.split(",") if v.strip() and v.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU ")]


def gpu_shares(n: int, gpus: list[str]) -> list[str | None]:
    """Each of ``n`` workers' ``CUDA_VISIBLE_DEVICES``: every GPU used, each by one worker when there are enough.

    With at least as many GPUs as workers, worker i gets GPUs i, i + n, ... (so 2 workers on 4
    GPUs use all 4, two each, through the strategy); with fewer, workers share them in turn (and
    :func:`run_local_workers` lets TensorFlow's memory grow, so that they fit). None: no GPU, nothing to set.
    """
    if not gpus:
        return [None] * n
    if len(gpus) >= n:
        return [",".join(gpus[i::n]) for i in range(n)]
    return [gpus[i % len(gpus)] for i in range(n)]


def run_local_workers(n: int, command: list[str]) -> int:
    """Run ``command`` (an ``ecgvgg run`` without ``--workers``) as ``n`` workers on 127.0.0.1; return the exit status.

    Each worker gets its own GPUs (:func:`gpu_shares`). Worker 0 (the chief) prints as a single run
    would; the others are quiet, and the last lines of one that fails are shown. The status is the chief's, or 1 when
    another worker failed.
    """
    import subprocess
    import sys

    procs = []
    shares = gpu_shares(n, local_gpus())
    shared = len(set(shares)) < n  # a GPU shared by workers: each takes memory as it needs it
    for i, (config, share) in enumerate(zip(local_configs(n), shares)):
        env = {**os.environ, "TF_CONFIG": config}
        if share is not None:
            env["CUDA_VISIBLE_DEVICES"] = share
            if shared:
                env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
        out = None if i == 0 else subprocess.PIPE
        procs.append(subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT if i else None, text=True))
    try:
        outputs = [p.communicate()[0] for p in procs]
    except KeyboardInterrupt as exc:  # pass it on: each worker ends its part (the chief marks the run KILLED)
        import signal

        sig = signal.SIGINT if type(exc) is KeyboardInterrupt else signal.SIGTERM
        for p in procs:
            if p.poll() is None:
                p.send_signal(sig)
        for p in procs:
            p.wait()
        return procs[0].returncode
    for i, (p, text) in enumerate(zip(procs, outputs)):
        if i and p.returncode not in (0, 3):
            tail = "\n".join((text or "").strip().splitlines()[-5:])
            print(f"worker {i} failed (exit {p.returncode}):\n{tail}", file=sys.stderr)
            return procs[0].returncode or 1
    return procs[0].returncode
