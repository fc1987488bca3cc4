"""Which job goes to which server in ``run --server``: a queue of jobs, bounded tries per job, servers marked
down when they fail. Pure Python and thread-safe (one worker thread per server calls it); no HTTP here.

A job that fails because its server failed (gone, refused, timed out) goes back to the queue for another
live server while it has tries left; that server is marked down and takes nothing more. A job that fails
for its own reasons (the server rejected the prompt, the workflow raised) fails at once.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field


@dataclass
class Attempt:
    """One try of a job: the server and, when it failed, why."""

    server: str
    error: str = ""


@dataclass
class ScheduledJob:
    name: str
    payload: object = None
    attempts: list[Attempt] = field(default_factory=list)
    state: str = "queued"  # queued | running | done | failed

    @property
    def reason(self) -> str:
        """Why the job failed: each failed try as ``<server>: <error>``."""
        return "; ".join(f"{a.server}: {a.error}" for a in self.attempts if a.error)


class JobSchedule:
    """Jobs handed to servers one at a time; ``tries`` = how many servers one job may be tried on."""

    def __init__(self, jobs: list[ScheduledJob], servers: list[str], tries: int = 3):
        if tries < 1:
            raise ValueError("tries must be at least 1")
        self.jobs = list(jobs)
        self.tries = tries
        self.down: dict[str, str] = {}
        self.servers = list(servers)
        self._queue = deque(self.jobs)
        self._running = 0
        self._lock = threading.Condition()

    def next_job(self, server: str) -> ScheduledJob | None:
        """The next job for ``server``; waits while other servers' jobs may still come back; None when there is
        nothing left for it (queue empty and nothing running, or the server is down)."""
        with self._lock:
            while True:
                if server in self.down:
                    return None
                if self._queue:
                    job = self._queue.popleft()
                    job.state = "running"
                    job.attempts.append(Attempt(server))
                    self._running += 1
                    return job
                if self._running == 0:
                    return None
                self._lock.wait()

    def succeeded(self, job: ScheduledJob) -> None:
        with self._lock:
            job.state = "done"
            self._finish()

    def failed(self, job: ScheduledJob, error: str) -> None:
        """The job itself failed (e.g. its prompt was rejected): no retry."""
        with self._lock:
            job.attempts[-1].error = error
            job.state = "failed"
            self._finish()

    def server_failed(self, job: ScheduledJob, error: str) -> None:
        """The job's server failed while holding it: the server is marked down, the job is queued again if it has
        tries left and a live server remains, otherwise it fails."""
        with self._lock:
            attempt = job.attempts[-1]
            attempt.error = error
            self.down[attempt.server] = error
            if len(job.attempts) < self.tries and self.live_servers():
                job.state = "queued"
                self._queue.appendleft(job)
            else:
                job.state = "failed"
            if not self.live_servers():  # nobody left to take the queue
                while self._queue:
                    stranded = self._queue.popleft()
                    stranded.state = "failed"
                    stranded.attempts.append(Attempt("-", "no live server left"))
            self._finish()

    def live_servers(self) -> list[str]:
        return [server for server in self.servers if server not in self.down]

    def _finish(self) -> None:
        self._running -= 1
        self._lock.notify_all()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {state: sum(job.state == state for job in self.jobs) for state in ("done", "failed", "queued")}
