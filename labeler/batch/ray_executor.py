"""The Ray executor: a refs-mode batch handed out in chunks to model replicas (Ray actors) on a Ray cluster.

`pipeline.label_batch(..., executor="ray")` runs it; the command line's `--executor ray`. Ray is imported
only here, and this module only then. The driver (this process) keeps the manifest: it hands out chunks
of `batch_size` consecutive targets of the `BatchRecorder`'s to-do list, at most IN_FLIGHT per worker, and
hands the records back to the recorder as they come, which records them in target order, as for the local
executor, so the output folder is byte-identical to a local run's. Each worker (`LabelWorker`) builds one
labeler from a `LabelerSpec` (the prompts and the run settings, as data), reads its chunk (the next chunk
ahead, while the current one is labeled), labels it and writes every target's files with
`local.label_and_write` (the atomic `TargetWriter`), and returns the records; only the driver writes
manifest.json and results.csv.

A worker that dies (killed, out of memory, node lost) is replaced by a new one, and the chunks it had
not finished are handed out again, whole (the same grouping, so the same bytes), each alone on a worker,
so that a second death is surely that chunk's own. A chunk whose worker died twice is split into single
targets, each again alone; a single target whose worker dies twice is recorded as failed with the reason,
and the batch goes on.
A stop request hands out nothing more; the chunks already handed out finish and are recorded.

Usage (what label_batch does):
    with ray_cluster(address=None, device="auto", workers=None) as cluster:   # starts or joins Ray
        recorder = BatchRecorder(OutputFolder("out"), targets, prompts.classes, settings.fingerprint(prompts))
        summary = cluster.run_batch(LabelerSpec(prompts, settings, Sam2Backend), recorder, batch_size=4)
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import ray
from ray.exceptions import GetTimeoutError, RayActorError, WorkerCrashedError

from ..errors import UsageError
from ..outputs.folder import OutputFolder, TargetRecord
from ..outputs.writers import TargetWriter
from ..prompts.prompt_set import PromptSet
from .local import label_and_write, read_target, release_free_heap, steady_heap
from .recorder import BatchRecorder, BatchSummary
from .settings import RunSettings

log = logging.getLogger("labeler")
IN_FLIGHT = 2  # chunks per worker: one being labeled, the next one's images read meanwhile
DEATHS = 2  # a chunk in flight when its worker died this often is split; a single target, failed
PLACEMENT_WAIT = 120  # seconds without a ready worker before the run says it is still waiting for one
START_FAILURES = 3  # workers in a row that die before they are ready: the batch stops with the reason
PACKAGE = Path(__file__).resolve().parents[1]  # the labeler package
try:  # the exceptions that mean "the worker process is gone", as far as this Ray version has them
    from ray.exceptions import OutOfMemoryError as _RayOOM
    WORKER_GONE = (RayActorError, WorkerCrashedError, _RayOOM)
except ImportError:  # pragma: no cover
    WORKER_GONE = (RayActorError, WorkerCrashedError)


@dataclass(frozen=True)
class LabelerSpec:
    """How a worker builds its labeler: the prompts, the resolved run settings and the backend class, as data.

    A labeler factory is any picklable callable returning (labeler, prepare): a `TargetLabeler` and the
    model input of an image (`ModelBackend.prepare`, or None); tests pass stand-ins. The settings'
    checkpoint is an absolute path readable on every node, or "none"; each worker builds its own feature
    cache from them. The backend class travels with the spec, so workers need no registry of their own.
    """

    prompts: PromptSet
    settings: RunSettings
    backend_class: type

    def __call__(self):
        from .feature_cache import feature_cache_for

        s = self.settings
        backend = self.backend_class(s.model)
        features = feature_cache_for(s.cache, s.cache_size_gb, backend)
        return backend.condition(self.prompts, s.memory, s.threshold, features=features), backend.prepare


# max_concurrency: the chunks in flight run on threads of their own, so one chunk's files are written while
# the next one is on the model (`model` lets one at a time on it), as in the local executor; with one
# thread, every chunk's writing waited for the model and the model for it (356 ms a target at 512 px).
@ray.remote(concurrency_groups={"io": 1}, max_concurrency=IN_FLIGHT, max_restarts=0, max_task_retries=0)
class LabelWorker:
    """One model replica: labels the chunks handed to it, one at a time, and writes their files."""

    def __init__(self, factory, root: str, classes: dict[int, str], threads: int, io_threads: int):
        import torch

        torch.set_num_threads(threads)
        steady_heap()
        self.labeler, self.prepare = factory()
        self.writer = TargetWriter(OutputFolder(root), classes)
        self.io = ThreadPoolExecutor(io_threads, "io")
        self.ahead: dict[int, object] = {}  # target index -> future of its decoded image
        self.missed: set[int] = set()  # chunks labeled before their read-ahead arrived
        self.lock = threading.Lock()  # guards ahead and missed
        self.model = threading.Lock()  # one chunk on the model at a time

    def ready(self) -> dict:
        import torch

        return {"host": socket.gethostname(), "pid": os.getpid(), "threads": torch.get_num_threads(),
                "object_ids": list(self.labeler.object_ids)}

    @ray.method(concurrency_group="io")
    def read_ahead(self, items: list[tuple[int, str, str]]) -> None:
        """Start decoding the images of a chunk that waits behind the one being labeled."""
        with self.lock:
            for i, path, _ in items:
                if i in self.missed:
                    self.missed.discard(i)
                else:
                    self.ahead[i] = self.io.submit(read_target, path, self.prepare)

    def label(self, items: list[tuple[int, str, str]]) -> list[TargetRecord]:
        """Label (index, target path, output stem) items as one chunk; their records, in order."""
        with self.lock:
            reads = []
            for i, path, _ in items:
                future = self.ahead.pop(i, None)
                if future is None:
                    self.missed.add(i)
                    future = self.io.submit(read_target, path, self.prepare)
                reads.append(future)
        chunk = [(Path(path), stem, future, True) for (_, path, stem), future in zip(items, reads)]
        with self.model:
            written = label_and_write(self.labeler, self.writer, self.io, chunk)
            release_free_heap()
        return [r.result() for r in written]  # only once their files are written




@dataclass
class _Task:
    positions: list[int]  # positions in the to-do list: one chunk, or one target of a split chunk
    deaths: int = 0  # times its worker died while labeling it


@dataclass
class _Slot:
    """One worker place: its actor, the actor's ready reference until it is ready, its chunks in flight."""

    number: int
    actor: object = None
    starting: object = None  # ObjectRef of ready() until the worker has built its model
    inflight: list = field(default_factory=list)  # [(ObjectRef, _Task)], oldest (being labeled) first


@dataclass
class RayCluster:
    """A Ray instance this run started or joined, and how its workers are placed."""

    device: str  # "cuda" or "cpu": what the workers label on
    workers: int
    cpus: float  # per worker
    gpus: float  # per worker
    threads: int  # torch threads per worker
    address: str

    def run_batch(self, factory, recorder: BatchRecorder, batch_size: int = 1,
                  object_ids: list[int] | None = None) -> BatchSummary:
        """Label the recorder's to-do list on this cluster (refs mode), `batch_size` targets a chunk.

        factory: builds each worker's labeler (a `LabelerSpec`). object_ids: for the summary when no
        worker is started (nothing to do).
        """
        return _Run(self, factory, recorder, batch_size, object_ids).run()


@contextlib.contextmanager
def ray_cluster(address: str | None = None, device: str = "auto", workers: int | None = None):
    """Start a local Ray instance (address None) or join a running cluster ("auto", "HOST:PORT",
    "ray://HOST:PORT"); yields the `RayCluster` and shuts down only what it started.

    A Ray instance already initialised in this process (`ray.init` by the caller) is used as it is.
    """
    started = False
    if not ray.is_initialized():
        main = threading.current_thread() is threading.main_thread()
        term = signal.getsignal(signal.SIGTERM) if main else None
        try:
            # The labeler package travels with the job, so nodes run this very code.
            ray.init(address=address or "local", include_dashboard=False,
                     runtime_env={"py_modules": [str(PACKAGE)]})
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"--ray-address {address}: can't join a Ray cluster there" if address else "can't start Ray"
            raise UsageError(f"{where} ({e})") from None
        finally:
            if main and term is not None:
                signal.signal(signal.SIGTERM, term)  # ray.init replaces it; SIGTERM stays a stop request
        started = True
    try:
        yield _placement(device, workers, address or "local")
    finally:
        if started:
            ray.shutdown()


def _placement(device: str, workers: int | None, address: str) -> RayCluster:
    import torch

    total = ray.cluster_resources()
    gpus, cpus = int(total.get("GPU", 0)), float(total.get("CPU", 1))
    if device == "auto":
        device = "cuda" if gpus else "cpu"
    elif device == "cuda" and not gpus:
        raise UsageError("--device cuda: the Ray cluster has no GPUs (try --device auto)")
    elif device not in ("cuda", "cpu"):
        raise UsageError(f"--device {device}: Ray workers label on cuda or cpu (try --device auto)")
    n = workers or (gpus if device == "cuda" else 1)
    if device == "cuda":
        per_gpu = min(float(node["Resources"].get("CPU", 1)) / node["Resources"]["GPU"]
                      for node in ray.nodes() if node["Alive"] and node["Resources"].get("GPU"))
        gpu_share = min(1.0, gpus / n)
        cpu_share = max(1.0, math.floor(per_gpu * gpu_share))
        threads = int(cpu_share)
    else:
        gpu_share = 0.0
        cpu_share = float(max(1, int(cpus // n))) if n <= cpus else cpus / n
        # A matrix product's reduction order depends on torch's thread count (MKL splits it between
        # threads), so CPU workers run as many threads as the local executor does on this machine:
        # the same bytes as --executor local, for some oversubscription when workers share cores.
        threads = torch.get_num_threads()
    log.info("Ray at %s: %d worker(s) on %s, %s CPU(s)%s and %d torch thread(s) each", address, n, device,
             f"{cpu_share:g}", f", {gpu_share:g} GPU" if gpu_share else "", threads)
    return RayCluster(device, n, cpu_share, gpu_share, threads, address)


def _death_reason(error: BaseException) -> str:
    """One line on why a worker died, from Ray's paragraph."""
    text = " ".join(str(error).split())
    for marker in ("exit detail:", "Error message:", "The actor died"):
        if marker in text:
            text = text[text.index(marker):]
            break
    return f"{type(error).__name__}: {text[:200]}"


class _Run:
    """One batch on the cluster: the hand-out, the workers' lives and deaths (the recorder keeps the records)."""

    def __init__(self, cluster: RayCluster, factory, recorder: BatchRecorder, batch_size: int,
                 object_ids: list[int] | None):
        self.cluster, self.factory, self.recorder = cluster, factory, recorder
        todo = len(recorder.todo)
        self.new = [_Task(list(range(n, min(n + batch_size, todo)))) for n in range(0, todo, batch_size)]
        self.new.reverse()  # popped from the end
        self.retry: list[_Task] = []  # handed out before, its worker died: first in line
        self.start_failures = 0
        self.object_ids = object_ids
        self.slots: list[_Slot] = []
        self.name = f"labeler-{uuid.uuid4().hex[:8]}"
        self.started = 0

    # -- workers --------------------------------------------------------------------------------------------
    def _start(self, slot: _Slot) -> None:
        c = self.cluster
        self.started += 1
        slot.actor = LabelWorker.options(
            name=f"{self.name}-{slot.number}-{self.started}", num_cpus=c.cpus, num_gpus=c.gpus,
            # PYTHONPATH: where the package is a shared path. OMP_WAIT_POLICY: as main.py sets it, so a
            # worker's idle OpenMP threads don't spin on the CPUs its reading and writing threads need.
            runtime_env={"env_vars": {"PYTHONPATH": str(PACKAGE.parent),
                                      "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}},
        ).remote(self.factory, str(self.recorder.folder.root.absolute()), self.recorder.classes, c.threads,
                 max(1, int(c.cpus)))
        slot.starting = slot.actor.ready.remote()
        slot.inflight = []

    def _ready(self, slot: _Slot) -> None:
        try:
            info = ray.get(slot.starting)
        except WORKER_GONE as e:
            self.start_failures += 1
            reason = _death_reason(e)
            if self.start_failures >= START_FAILURES:
                raise RuntimeError(f"Ray workers die before they are ready ({reason})") from None
            log.warning("worker %d could not start (%s); starting another", slot.number, reason)
            self._start(slot)
            return
        slot.starting = None
        self.start_failures = 0
        self.object_ids = info["object_ids"]
        log.info("worker %d ready on %s (process %d, %d torch thread(s))", slot.number, info["host"], info["pid"],
                 info["threads"])

    def _died(self, slot: _Slot, error: BaseException) -> None:
        """The slot's worker is gone: keep what it finished, hand out again what it did not, replace it."""
        reason = _death_reason(error)
        with contextlib.suppress(Exception):
            ray.kill(slot.actor)  # a worker that is only unreachable must not finish these twice
        inflight, slot.inflight = slot.inflight, []
        log.warning("worker %d died (%s); %d chunk(s) it held go to the other workers", slot.number, reason,
                    len(inflight))
        for ref, task in inflight:
            try:
                self._accept(task, ray.get(ref, timeout=60))  # finished before the worker died
                continue
            except (*WORKER_GONE, GetTimeoutError):
                pass
            # Unfinished: it may have been the one being labeled. From now on it runs alone on a worker,
            # so a second death is surely its own.
            task.deaths += 1
            if task.deaths < DEATHS:
                self.retry.append(task)
            elif len(task.positions) > 1:  # which of its targets? each alone
                self.retry += [_Task([p], deaths=DEATHS - 1) for p in task.positions]
            else:
                p = task.positions[0]
                why = f"its Ray worker died twice while labeling it ({reason})"
                self._accept(task, [TargetRecord(self.recorder.target(p), self.recorder.stem(p), "failed", error=why)])
        self.retry.sort(key=lambda t: t.positions[0])
        self._start(slot)

    def _accept(self, task: _Task, records: list[TargetRecord]) -> None:
        for p, record in zip(task.positions, records):
            target = self.recorder.target(p)  # workers read it by its absolute path; here it is as given
            record = replace(record, path=target, error=record.error.replace(str(target.absolute()), str(target)))
            self.recorder.accept(p, record)

    # -- the batch -----------------------------------------------------------------------------------------
    def _hand_out(self, stopping: bool) -> None:
        """Keep each ready worker IN_FLIGHT chunks busy; a chunk whose worker died runs alone, and first."""
        r = self.recorder
        for slot in sorted(self.slots, key=lambda s: len(s.inflight)):
            while (slot.starting is None and len(slot.inflight) < IN_FLIGHT
                   and not any(t.deaths for _, t in slot.inflight)):
                if self.retry:
                    if slot.inflight:
                        break  # nothing new meanwhile: workers drain until one is free for it
                    task = self.retry.pop(0)
                elif self.new and not stopping:
                    task = self.new.pop()
                else:
                    return
                items = [(r.todo[p], str(r.target(p).absolute()), r.stem(p)) for p in task.positions]
                if slot.inflight:
                    slot.actor.read_ahead.remote(items)
                slot.inflight.append((slot.actor.label.remote(items), task))

    def _loop(self) -> bool:
        """Hand out and collect until done (True) or stopped with chunks never handed out (False)."""
        last_seen = time.monotonic()
        while True:
            stopping = self.recorder.stop_requested
            self._hand_out(stopping)
            waiting = {slot.starting: slot for slot in self.slots if slot.starting is not None}
            running = {ref: slot for slot in self.slots for ref, _ in slot.inflight}
            if not running and not self.retry and (stopping or not self.new):
                return not self.new
            done, _ = ray.wait([*running, *waiting], num_returns=1, timeout=0.5)
            if not running and waiting and time.monotonic() - last_seen > PLACEMENT_WAIT:
                log.warning("no Ray worker has started for %d s: can the cluster place %d worker(s) of %g CPU(s)%s? "
                            "(`ray status` shows its resources)", PLACEMENT_WAIT, len(waiting), self.cluster.cpus,
                            f" and {self.cluster.gpus:g} GPU" if self.cluster.gpus else "")
                last_seen = time.monotonic()
            if running:
                last_seen = time.monotonic()
            for ref in done:
                if ref in waiting:
                    self._ready(waiting[ref])
                    continue
                slot = running[ref]
                if not any(r == ref for r, _ in slot.inflight):
                    continue  # handled with its worker's death
                try:
                    records = ray.get(ref)
                except WORKER_GONE as e:
                    self._died(slot, e)
                    continue
                task = next(t for r, t in slot.inflight if r == ref)
                slot.inflight = [(r, t) for r, t in slot.inflight if r != ref]
                self._accept(task, records)
            self.recorder.commit()

    def run(self) -> BatchSummary:
        with self.recorder:
            try:
                if self.recorder.todo:
                    self.slots = [_Slot(n + 1) for n in range(min(self.cluster.workers, len(self.new)))]
                    for slot in self.slots:
                        self._start(slot)
                    self.recorder.interrupted = not self._loop()
            finally:
                for slot in self.slots:
                    with contextlib.suppress(Exception):
                        ray.kill(slot.actor)
        return self.recorder.summary(self.object_ids or [])
