"""A folder's batch on Ray Data (``prompt-free generate --reference-dir DIR --ray``).

The caller's task requests become a Ray dataset of jobs (one per reference, its files turned into
bytes by ``TaskRequest.portable`` and its inputs recorded here, where the files are); a pool of
actors (Ray Data ``map_batches`` with a callable class), each holding one ``Engine`` built with
the command's options, runs them and tags each picture with its PNG metadata; the results come
back as they are done, and the caller writes them (``prompt_free.cli``), so a batch cut short
keeps what it finished. The pixels are the one-process run's: same request, same seeds.
"""

from __future__ import annotations

import logging
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from ..catalog import TaskRequest
from ..errors import PromptFreeError
from . import cluster

WHAT = "prompt-free generate --ray"
ACTORS_START_S = 600  # how long the actors may take to start (a busy cluster, a new node)


class BatchError(PromptFreeError):
    """The Ray batch cannot run as asked (more actors than the cluster holds, no GPU for
    ``--device cuda``) or stopped (an actor's failure that Ray could not recover)."""


@dataclass(frozen=True)
class BatchJob:
    """One reference's work as it travels to an actor."""

    key: int  # the caller's index of the request
    request: TaskRequest  # portable: images as bytes
    inputs: Mapping[str, Any]  # metadata.input_records of the request made where its files are


@dataclass(frozen=True)
class Done:
    """One job's outcome: the tagged result, or the message of its ``PromptFreeError``."""

    key: int
    result: Any = None  # TaskResult, its pictures carrying their metadata
    error: Optional[str] = None
    actor: str = ""  # host:pid of the actor that ran it


@dataclass(frozen=True)
class ActorPlan:
    """How many actors, each with what: one GPU on CUDA, an equal CPU share on the CPU."""

    count: int
    device: str  # "cuda" or "cpu"
    num_cpus: Optional[float] = None
    num_gpus: float = 0


def plan_actors(node_cpus: Sequence[float], gpus: float, requested: Optional[int] = None,
                device: Optional[str] = None) -> ActorPlan:
    """The actors for a cluster whose alive nodes have ``node_cpus`` CPUs and ``gpus`` GPUs in
    all. ``device`` None: CUDA when the cluster has GPUs. CUDA: one GPU per actor, by default as
    many actors as GPUs. CPU: by default one actor per node (one engine per machine, as one
    process uses all its cores), each with the largest equal CPU share with which ``requested``
    actors fit on the nodes."""
    gpus = int(gpus)
    if device is None:
        device = "cuda" if gpus else "cpu"
    if device == "cuda":
        if not gpus:
            raise BatchError("--device cuda: the Ray cluster has no GPU")
        count = requested or gpus
        if count > gpus:
            raise BatchError(f"--ray-actors {count}: the Ray cluster has {gpus} GPU(s), one per actor")
        return ActorPlan(count, "cuda", num_gpus=1)
    cpus = [int(c) for c in node_cpus if int(c) >= 1]
    count = requested or max(1, len(cpus))
    share = next((s for s in range(max(cpus, default=0), 0, -1) if sum(c // s for c in cpus) >= count), 0)
    if not share:
        raise BatchError(f"--ray-actors {count}: the Ray cluster has {sum(cpus)} CPU(s), at least one per actor")
    return ActorPlan(count, "cpu", num_cpus=share)


def cluster_plan(ray, requested: Optional[int], device: Optional[str]) -> ActorPlan:
    """``plan_actors`` for the alive nodes of the cluster ``ray`` is connected to."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    return plan_actors([n.get("CPU", 0) for n in nodes], sum(n.get("GPU", 0) for n in nodes), requested, device)


class EngineActor:
    """Ray Data's callable class: one engine per actor, built once; each batch's jobs run on it."""

    def __init__(self, engine_options: Mapping[str, Any]):
        from .. import threads
        from ..engine import Engine

        threads.configure()  # Ray sets OMP_NUM_THREADS to the actor's CPU share
        self.engine = Engine.from_profile(**engine_options)
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        return {"done": _objects([self.run(job) for job in batch["job"]])}

    def run(self, job: BatchJob) -> Done:
        from ..metadata import tag

        try:
            result = job.request.run(self.engine)
        except PromptFreeError as e:  # this reference's problem; the others go on
            return Done(job.key, error=str(e), actor=self.name)
        req = job.request
        tag(self.engine, result, req.task, req.settings, req.call, keep_paths=True, inputs=job.inputs)
        return Done(job.key, result=result, actor=self.name)


def _objects(values: List[Any]):
    """A numpy column of Python objects (Ray Data pickles them), one per value."""
    import numpy as np

    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def jobs_of(requests: Sequence[Tuple[int, TaskRequest]]) -> List[BatchJob]:
    """The jobs of ``(key, request)`` pairs: inputs recorded here (paths and hashes, as the
    one-process run records them), images sent as bytes."""
    from ..metadata import input_records

    return [BatchJob(key, request.portable(), input_records(request.settings, request.call))
            for key, request in requests]


def run_batch(requests: Sequence[Tuple[int, TaskRequest]], engine_options: Mapping[str, Any], *,
              address: Optional[str] = None, actors: Optional[int] = None,
              device: Optional[str] = None) -> Iterator[Done]:
    """Runs ``(key, request)`` pairs on a pool of Ray actors and yields each ``Done`` as it comes
    back. Starts a local Ray cluster (``address`` None) or joins the one at ``address``; one
    that this call started is shut down at the end. ``engine_options``: ``Engine.from_profile``'s
    arguments but the device, which the plan gives."""
    started = not _ray_initialized()
    try:
        ray = cluster.connect(address, what=WHAT)
    except ConnectionError as e:  # no cluster at that address
        raise BatchError(f"--ray-address {address}: {e}") from None
    try:
        plan = cluster_plan(ray, actors, device)
        jobs = jobs_of(requests)
        if jobs:
            yield from _stream(ray, jobs, {**engine_options, "device": plan.device}, plan)
    finally:
        if started:
            ray.shutdown()


def _ray_initialized() -> bool:
    try:
        import ray
    except ImportError:  # connect says which extra is missing
        return False
    return ray.is_initialized()


def _stream(ray, jobs: List[BatchJob], engine_options: Mapping[str, Any], plan: ActorPlan) -> Iterator[Done]:
    import ray.data
    from ray.data.exceptions import UserCodeException

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the caller shows the folder's bar
    # every actor up before the first job (each takes one at once), and a cluster that cannot
    # start them is an error in that time, not a wait without end
    context.wait_for_min_actors_s = ACTORS_START_S
    resources = {"num_gpus": plan.num_gpus} if plan.device == "cuda" else {"num_cpus": plan.num_cpus}
    # one block per job, one job at a time per actor: a free actor takes the next reference
    pool = ray.data.ActorPoolStrategy(size=plan.count, max_tasks_in_flight_per_actor=1)
    with _quiet_ray_data():
        ds = ray.data.from_items([{"job": job} for job in jobs], override_num_blocks=len(jobs))
        ds = ds.map_batches(EngineActor, fn_constructor_kwargs={"engine_options": dict(engine_options)},
                            batch_size=1, batch_format="numpy", compute=pool, **resources)
        try:
            for row in ds.iter_rows():
                yield row["done"]
        except (ray.exceptions.RayError, UserCodeException) as e:
            raise BatchError(f"the Ray batch stopped: {_last_line(e)}") from None


@contextmanager
def _quiet_ray_data():
    """Ray Data's notes on the terminal (its execution plan, that the jobs are pickled rather
    than Arrow, the traceback of an error this module turns into one line) are left out; its log
    files keep them. The command prints its own lines."""
    consoles = [h for h in logging.getLogger("ray.data").handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    levels = [h.level for h in consoles]
    for h in consoles:
        h.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for h, level in zip(consoles, levels):
            h.setLevel(level)


def _last_line(error: BaseException) -> str:
    """The line of a Ray error that says what went wrong (the traceback comes before it)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
