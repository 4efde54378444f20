"""The web app's work queue: bounded, one worker thread, progress and cancellation per job.

Sampling is slow and uses every core, so jobs run one at a time in submission order. A full queue is
refused at once (the server answers 429) instead of letting waits grow without bound.
"""

from __future__ import annotations

import queue
import secrets
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from text2earth.core.errors import USER_ERRORS, UserError

KEEP_FINISHED = 200  # job records kept for polling after they end


class QueueFull(UserError):
    """The bounded queue has no room (HTTP 429)."""


class Cancelled(Exception):
    """Raised inside a running job when its cancellation was asked for."""


@dataclass
class Job:
    id: str
    op: str
    params: dict[str, Any]
    state: str = "queued"  # queued | running | done | failed | cancelled
    progress: float = 0.0
    message: str = ""
    scene_id: str | None = None
    created: float = field(default_factory=time.time)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def public(self) -> dict[str, Any]:
        keys = ("id", "op", "state", "progress", "message", "scene_id")
        return {key: getattr(self, key) for key in keys}

    def report(self, fraction: float) -> None:
        """Progress in 0..1 from inside the work; raises :class:`Cancelled` once cancellation is asked."""
        if self._cancel.is_set():
            raise Cancelled
        self.progress = max(0.0, min(1.0, fraction))


Runner = Callable[[Job], str]  # runs a job, returns the id of the scene it produced or changed


class JobQueue:
    def __init__(self, runner: Runner, maxsize: int) -> None:
        self._runner = runner
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=maxsize)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name="text2earth-jobs", daemon=True)
        self._thread.start()

    def submit(self, op: str, params: dict[str, Any]) -> Job:
        job = Job(id=secrets.token_hex(8), op=op, params=params)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(
                f"the work queue is full ({self._queue.maxsize} jobs waiting): wait for one to finish"
            ) from None
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > KEEP_FINISHED + self._queue.maxsize + 1:
                self._jobs.popitem(last=False)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        job = self.get(job_id)
        if job is not None and job.state in ("queued", "running"):
            job._cancel.set()
            if job.state == "queued":
                job.state, job.message = "cancelled", "cancelled before it started"
        return job

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job._cancel.is_set():
                continue
            job.state = "running"
            try:
                job.scene_id = self._runner(job)
                job.state, job.progress = "done", 1.0
            except Cancelled:
                job.state, job.message = "cancelled", "cancelled while sampling"
            except USER_ERRORS as exc:
                job.state, job.message = "failed", str(exc)
            except Exception as exc:  # a bug: keep serving, show it, log the traceback
                traceback.print_exc()
                job.state, job.message = "failed", f"internal error: {type(exc).__name__}: {exc}"
