"""One job queue for the UI and the API: a FIFO of tasks run by one worker thread.

Everything that uses the device (generation, checkpoint loads and switches, unloading)
is a task: the UI and the API submit tasks and wait for them, so whichever face a job
comes from, jobs run one at a time in the order they arrived. The worker never dies: a
task's exception goes to the task (and so to whoever waits for it). A waiter that goes
away (a client that disconnects) does not stop its task; the task finishes and its
images are saved as usual.

`Progress` is the state of the running generation: which task, which batch and step,
the ETA and the latest live preview. `/sdapi/v1/progress` and the UI's progress bar
read the same object (`Runtime.progress`).
"""
from __future__ import annotations

import collections
import concurrent.futures
import datetime
import itertools
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)

HISTORY = 100  # finished tasks remembered (for "completed?" questions about a task id)


def new_task_id() -> str:
    """A1111's web UI makes ids like `task(abc123)`; any unique text works."""
    return f"task({uuid.uuid4().hex[:15]})"


@dataclass(eq=False)
class Task:
    id: str
    name: str
    fn: Callable[[], Any]
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    seq: int = 0

    @property
    def status(self) -> str:
        if self.finished is not None:
            if self.future.cancelled():
                return "cancelled"
            return "failed" if self.future.exception() is not None else "done"
        return "running" if self.started is not None else "queued"

    def result(self, timeout: float | None = None):
        """Wait for the task; its exception is raised here."""
        return self.future.result(timeout)

    def describe(self) -> dict:
        return {"id": self.id, "name": self.name, "status": self.status, "created": self.created,
                "started": self.started, "finished": self.finished}


class JobQueue:
    """A FIFO of tasks and the one worker thread that runs them.

    `lock`, when given, is held by the worker around each task, so code that still takes
    that lock directly (outside the queue) never runs beside a task."""

    def __init__(self, lock: threading.Lock | None = None, name: str = "kiln-worker"):
        self.lock = lock or threading.Lock()
        self.name = name
        self._pending: collections.deque[Task] = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._current: Task | None = None
        self._history: collections.deque[Task] = collections.deque(maxlen=HISTORY)
        self._seq = itertools.count()
        self._stopping = False

    # ---- submitting ------------------------------------------------------------------
    def submit(self, fn: Callable[[], Any], *, name: str = "job", task_id: str | None = None) -> Task:
        """Queue `fn` and return its Task at once (`task.result()` waits for it)."""
        task = Task(id=task_id or new_task_id(), name=name, fn=fn, seq=next(self._seq))
        with self._cond:
            if self._stopping:
                raise RuntimeError("the job queue is shut down")
            self._pending.append(task)
            self._ensure_worker()
            self._cond.notify_all()
        return task

    def run(self, fn: Callable[[], Any], *, name: str = "job", task_id: str | None = None):
        """Submit and wait. Called from inside a running task (a task that starts another
        one), it runs `fn` at once instead: waiting for the worker there would wait for
        ourselves."""
        if self.in_worker():
            return fn()
        return self.submit(fn, name=name, task_id=task_id).result()

    def in_worker(self) -> bool:
        return threading.current_thread() is self._thread

    def cancel(self, task_id: str) -> bool:
        """Drop a task that has not started yet; False if it is running or unknown."""
        with self._cond:
            for task in self._pending:
                if task.id == task_id:
                    self._pending.remove(task)
                    task.future.cancel()
                    task.finished = time.time()
                    self._history.append(task)
                    self._cond.notify_all()
                    return True
        return False

    # ---- looking -----------------------------------------------------------------------
    @property
    def current(self) -> Task | None:
        return self._current

    def pending(self) -> list[Task]:
        """Queued tasks, next first (the running one is not included)."""
        with self._cond:
            return list(self._pending)

    def position(self, task_id: str) -> int | None:
        """0 for the running task, 1 for the next, ...; None when not queued or running."""
        with self._cond:
            if self._current is not None and self._current.id == task_id:
                return 0
            for i, task in enumerate(self._pending, start=1):
                if task.id == task_id:
                    return i
        return None

    def find(self, task_id: str) -> Task | None:
        with self._cond:
            if self._current is not None and self._current.id == task_id:
                return self._current
            for task in itertools.chain(self._pending, reversed(self._history)):
                if task.id == task_id:
                    return task
        return None

    def history(self) -> list[Task]:
        """Finished tasks, oldest first (the last HISTORY of them)."""
        with self._cond:
            return list(self._history)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or running; False on timeout."""
        deadline = None if timeout is None else time.time() + timeout
        with self._cond:
            while self._pending or self._current is not None:
                left = None if deadline is None else deadline - time.time()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def shutdown(self, wait: bool = True, timeout: float | None = None) -> None:
        """Cancel queued tasks and stop the worker after the running one."""
        with self._cond:
            self._stopping = True
            while self._pending:
                task = self._pending.popleft()
                task.future.cancel()
                task.finished = time.time()
            self._cond.notify_all()
            thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # ---- the worker --------------------------------------------------------------------
    def _ensure_worker(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
            self._thread.start()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending:  # stopping, and nothing left
                    return
                task = self._pending.popleft()
                if not task.future.set_running_or_notify_cancel():
                    continue
                self._current = task
                task.started = time.time()
            value, error = None, None
            try:
                with self.lock:
                    value = task.fn()
            except BaseException as e:  # the task's problem, not the worker's
                if not isinstance(e, Exception):
                    log.error("task %s (%s) raised %s", task.id, task.name, type(e).__name__)
                error = e
            task.finished = time.time()
            # into the history before the waiter wakes, both under the lock that find()
            # takes: a client that asks about the task right after its result finds it done
            with self._cond:
                self._current = None
                self._history.append(task)
                if error is not None:
                    task.future.set_exception(error)
                else:
                    task.future.set_result(value)
                self._cond.notify_all()


# ---- progress ------------------------------------------------------------------------
@dataclass
class Progress:
    """The running generation, as /sdapi/v1/progress and the UI's progress bar see it.

    `job_count` is the number of batches (A1111's batch count), `job_no` the batch now
    sampling (0-based), `step`/`total` the step within it."""
    job: str | None = None  # what runs: "txt2img", "img2img", "ui", ...
    task_id: str | None = None
    job_count: int = 0
    job_no: int = 0
    step: int = 0
    total: int = 0
    started: float = 0.0
    timestamp: str = ""
    latents: object = None
    preview: object = None  # PIL image: the latest live preview
    preview_step: int = -1  # the overall step it shows (to skip re-encoding it)
    control: object = None  # the running job's generation.hooks.JobControl
    textinfo: str | None = None

    @classmethod
    def begin(cls, job: str, task_id: str | None, job_count: int, control=None) -> "Progress":
        now = time.time()
        return cls(job=job, task_id=task_id, job_count=max(1, int(job_count)), started=now,
                   timestamp=datetime.datetime.fromtimestamp(now).strftime("%Y%m%d%H%M%S"), control=control)

    @property
    def active(self) -> bool:
        return self.job is not None

    def on_step(self, step: int, total: int) -> None:
        """Record a sampler step; a step number that does not grow means a new batch."""
        if self.step and step <= self.step:
            self.job_no = min(self.job_no + 1, max(self.job_count - 1, 0))
        self.step, self.total = step, total
        self.textinfo = f"Batch {self.job_no + 1}/{self.job_count}, step {step}/{total}"

    @property
    def fraction(self) -> float:
        """Done so far, 0..1."""
        if not self.active or self.job_count <= 0:
            return 0.0
        within = self.step / self.total if self.total else 0.0
        return min(1.0, (self.job_no + within) / self.job_count)

    @property
    def overall_step(self) -> int:
        return self.job_no * (self.total or 0) + self.step

    def eta(self, now: float | None = None) -> float:
        """Seconds left, from the time spent so far (0 when idle or not started)."""
        done = self.fraction
        if not self.active or done <= 0:
            return 0.0
        elapsed = (now or time.time()) - self.started
        return max(0.0, elapsed / done - elapsed)

    @property
    def interrupted(self) -> bool:
        return bool(getattr(self.control, "interrupted", False))

    @property
    def skipped(self) -> bool:
        return bool(getattr(self.control, "skipped", False))

    def state(self) -> dict:
        """A1111's `shared.state.dict()` keys (plus the task id)."""
        return {"skipped": self.skipped, "interrupted": self.interrupted, "stopping_generation": False,
                "job": self.job or "", "job_count": self.job_count if self.active else 0,
                "job_timestamp": self.timestamp or "0", "job_no": self.job_no if self.active else 0,
                "sampling_step": self.step, "sampling_steps": self.total, "id_task": self.task_id}


__all__ = ["JobQueue", "Task", "Progress", "new_task_id"]
