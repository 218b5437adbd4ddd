"""Moves run in background threads of this process; drivers keep their futures here by handle id."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from threading import Lock
from typing import Generic, Protocol, TypeVar

from drorch.drivers.base import Driver, Endpoint, Handle, Phase, Progress
from drorch.errors import MoveCancelled


class Jobs:
    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="drorch-move")
        self._futures: dict[str, Future[Progress]] = {}
        self._steps: dict[str, str] = {}
        self._bytes: dict[str, tuple[int, int]] = {}
        self._cancelled: dict[str, str] = {}
        self._lock = Lock()

    def submit(self, handle_id: str, fn: Callable[[], Progress]) -> None:
        """Run fn once for this handle; fn returns the final progress, or raises. What the move noted on its way
        (its step, its bytes, a cancel) goes when it ends; its future keeps how it ended."""
        def run() -> Progress:
            try:
                return fn()
            finally:
                for notes in (self._steps, self._bytes, self._cancelled):
                    notes.pop(handle_id, None)

        with self._lock:
            if handle_id not in self._futures:
                self._futures[handle_id] = self._pool.submit(run)

    def future(self, handle_id: str) -> Future[Progress] | None:
        return self._futures.get(handle_id)

    def wait(self, handle_id: str, timeout: float) -> bool:
        """Wait for the handle's job; False when there is no job for it in this process."""
        fut = self._futures.get(handle_id)
        if fut is None:
            return False
        wait([fut], timeout=timeout)
        return True

    def cancel(self, handle: Handle) -> None:
        """Ask the move to stop at its next cancellable step (a move that has ended is not asked)."""
        fut = self._futures.get(handle.id)
        if fut is not None and fut.done():
            return
        self._cancelled[handle.id] = (f"the move of {handle.request.workload} was cancelled; it stays on site "
                                      f"{handle.request.source.site}")

    def set_step(self, handle_id: str, step: str, cancellable: bool = True) -> None:
        """Where the move is. A cancelled move stops at its next cancellable step (raising MoveCancelled, which the
        move's rollback lets through); the steps after the target took over are not cancellable."""
        self._steps[handle_id] = step
        why = self._cancelled.get(handle_id)
        if cancellable and why is not None:
            raise MoveCancelled(why)

    def step(self, handle_id: str) -> str:
        return self._steps.get(handle_id, "")

    def counter(self, handle_id: str, total: int = 0) -> Callable[[int], None]:
        """Counts the bytes a move sends, against `total` when it is known beforehand."""
        def counted(n: int) -> None:
            done = self._bytes.get(handle_id, (0, total))[0] + n
            self._bytes[handle_id] = (done, max(total, done))
        return counted

    def sent(self, handle_id: str) -> tuple[int | None, int | None]:
        """(bytes sent, bytes to send) of a move, or (None, None) before it sent any."""
        return self._bytes.get(handle_id, (None, None))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


class ThreadedDriver(Driver):
    """A driver whose moves run in background threads of this process."""

    def __init__(self) -> None:
        self._jobs = Jobs()

    def _follow_move(self, handle: Handle) -> Progress | None:
        fut = self._jobs.future(handle.id)
        if fut is None:  # started by another process: only reality tells
            return None
        if fut.done():
            exc = fut.exception()
            if exc is not None:
                return Progress(Phase.FAILED, message=str(exc))
            return fut.result()
        done, total = self._jobs.sent(handle.id)
        return Progress(Phase.RUNNING, step=self._jobs.step(handle.id), bytes_done=done, bytes_total=total)

    def wait(self, handle: Handle, timeout: float) -> None:
        if not self._jobs.wait(handle.id, timeout):
            super().wait(handle, timeout)

    def close(self) -> None:
        self._jobs.shutdown()


class Closable(Protocol):
    def close(self) -> None: ...


S = TypeVar("S", bound=Closable)


class SiteClients(Generic[S]):
    """One client per host entry, not per daemon: two hosts (even of two sites) that name one endpoint each get
    errors that name their own site and host. Made on first use, from any thread."""

    def __init__(self, make: Callable[[Endpoint], S]) -> None:
        self._make = make
        self._made: dict[Endpoint, S] = {}
        self._lock = Lock()

    def __call__(self, ep: Endpoint) -> S:
        with self._lock:
            site = self._made.get(ep)
            if site is None:
                site = self._made[ep] = self._make(ep)
            return site

    def close(self) -> None:
        with self._lock:
            for site in self._made.values():
                site.close()
            self._made.clear()
