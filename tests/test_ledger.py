"""The history read with the standard library must say what the store says, field for field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import SQLModel

from drorch.cli.common import run_json
from drorch.errors import NotFound
from drorch.model.records import Action, Mode, Operation, RunState, StepState
from drorch.store._location import TABLES
from drorch.store.history import History
from drorch.store.rows import Run, Step
from drorch.store.sql_store import Store
from tests.support.cli import drorch

texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)).map(
    lambda t: t.replace(tzinfo=UTC))
runs = st.builds(Run, operation=st.sampled_from(Operation), playbook=texts, playbook_path=texts, source_site=texts,
                 target_site=texts, state=st.sampled_from(RunState), pid=st.integers(1, 2**22), host=texts,
                 started_at=times, ended_at=st.none() | times, error=st.none() | texts,
                 mode=st.none() | st.sampled_from(Mode), abort_requested=st.none() | st.booleans(),
                 commit_deadline=st.none() | times)
steps = st.builds(Step, run_id=st.just(0), seq=st.integers(0, 999), workload=texts, kind=texts, strategy=texts,
                  source_site=texts, target_site=texts, state=st.sampled_from(StepState),
                  started_at=st.none() | times, ended_at=st.none() | times, outcome=st.none() | texts,
                  bytes_done=st.none() | st.integers(0, 2**62), handle=st.none() | texts, warning=st.none() | texts,
                  action=st.none() | st.sampled_from(Action))


def test_it_knows_every_table_of_the_store() -> None:
    assert set(SQLModel.metadata.tables) == TABLES


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(run=runs, its_steps=st.lists(steps, max_size=4))
def test_runs_and_steps_read_as_the_store_reads_them(store: Store, run: Run, its_steps: list[Step]) -> None:
    store.add_run(run, its_steps)
    ours, theirs = History(store.url), store.runs(1000)
    assert ours.runs(1000) == [r.model_dump() for r in theirs]
    assert ours.run(run.id or 0) == store.run(run.id or 0).model_dump()
    assert ours.steps(run.id or 0) == [s.model_dump() for s in store.steps(run.id or 0)]


def test_history_json_is_the_store_records_json(capsys: pytest.CaptureFixture[str], store: Store) -> None:
    now = datetime.now(UTC)
    run = Run(operation="failover", playbook="shop", playbook_path="shop.yaml", source_site="a", target_site="b",
              state=RunState.PENDING_COMMIT, pid=1, host="elsewhere", started_at=now.replace(microsecond=0),
              commit_deadline=now + timedelta(hours=1), abort_requested=False)
    store.add_run(run, [Step(run_id=0, seq=1, workload="db", kind="vm", strategy="live", source_site="a",
                             target_site="b", state=StepState.SUCCEEDED, handle="{}", request="{}")])
    code, out, _ = drorch(capsys, "history", "1", "--json")
    assert code == 0 and json.loads(out) == run_json(store.run(1), store.steps(1))
    code, out, _ = drorch(capsys, "history", "--json")
    assert code == 0 and json.loads(out) == [store.run(1).model_dump(mode="json")]


def test_a_missing_run_is_named_and_a_missing_store_is_empty(store: Store, tmp_path: str) -> None:
    with pytest.raises(NotFound, match=r"^no run 7 in sqlite:///"):
        History(store.url).run(7)
    assert History(f"sqlite:///{tmp_path}/none.db").runs(5) == []
