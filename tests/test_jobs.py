"""Moves run as background jobs: what a job notes on its way (step, bytes, a cancel) lasts as long as it runs."""

from __future__ import annotations

import threading

import pytest

from drorch.drivers.background import Jobs
from drorch.drivers.base import Endpoint, Handle, MoveRequest, Phase, Progress
from drorch.errors import MoveCancelled
from drorch.model.playbook import Strategy


def handle() -> Handle:
    return Handle(MoveRequest("web", Strategy.COPY, Endpoint("a", "fake://a"), Endpoint("b", "fake://b")))


def test_a_jobs_notes_go_when_it_ends_and_its_outcome_stays() -> None:
    jobs, h = Jobs(), handle()
    seen: list[object] = []

    def move() -> Progress:
        jobs.set_step(h.id, "copying")
        jobs.counter(h.id, 10)(4)
        seen.extend([jobs.step(h.id), jobs.sent(h.id)])
        return Progress(Phase.COMPLETED, message="running on site b")

    jobs.submit(h.id, move)
    assert jobs.wait(h.id, 5)
    fut = jobs.future(h.id)
    assert fut is not None and fut.result().message == "running on site b"
    assert seen == ["copying", (4, 10)]
    assert (jobs.step(h.id), jobs.sent(h.id)) == ("", (None, None))
    jobs.cancel(h)  # too late: nothing is noted for a move that has ended
    assert jobs._cancelled == {}
    jobs.shutdown()


def test_a_cancel_stops_the_job_at_its_next_cancellable_step() -> None:
    jobs, h = Jobs(), handle()
    go = threading.Event()

    def move() -> Progress:
        go.wait(5)
        jobs.set_step(h.id, "started on the target", cancellable=False)  # past the point of no return: goes on
        jobs.set_step(h.id, "copying")
        return Progress(Phase.COMPLETED)

    jobs.submit(h.id, move)
    jobs.cancel(h)
    go.set()
    assert jobs.wait(h.id, 5)
    fut = jobs.future(h.id)
    assert fut is not None
    with pytest.raises(MoveCancelled, match="the move of web was cancelled; it stays on site a"):
        fut.result()
    assert jobs._cancelled == {}
    jobs.shutdown()
