from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from drorch.drivers.containers.docker_config import clone_config
from drorch.errors import ExitCode
from drorch.model.records import EXIT_CODES, RunState, StepState, run_outcome

finished = st.sampled_from([StepState.SUCCEEDED, StepState.FAILED])


@given(st.lists(finished, min_size=1))
def test_run_outcome_follows_its_steps(states: list[StepState]) -> None:
    outcome = run_outcome(states)
    if all(s is StepState.SUCCEEDED for s in states):
        assert outcome is RunState.SUCCEEDED and EXIT_CODES[outcome] is ExitCode.OK
    elif all(s is StepState.FAILED for s in states):
        assert outcome is RunState.FAILED and EXIT_CODES[outcome] is ExitCode.FAILED
    else:
        assert outcome is RunState.PARTIAL and EXIT_CODES[outcome] is ExitCode.PARTIAL


def test_clone_config_keeps_what_defines_the_container() -> None:
    inspect = {
        "Config": {"Hostname": "0123abcd", "Image": "shop/web:2", "Cmd": ["serve"], "Env": ["A=1"],
                   "Labels": {"tier": "web"}, "ExposedPorts": {"80/tcp": {}}},
        "HostConfig": {"NetworkMode": "none", "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]},
                       "RestartPolicy": {"Name": "always", "MaximumRetryCount": 0}, "Memory": 0, "Binds": None,
                       "ContainerIDFile": "/tmp/id"},
    }
    assert clone_config(inspect) == {
        "Image": "shop/web:2", "Cmd": ["serve"], "Env": ["A=1"], "Labels": {"tier": "web"},
        "ExposedPorts": {"80/tcp": {}},
        "HostConfig": {"NetworkMode": "none", "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]},
                       "RestartPolicy": {"Name": "always", "MaximumRetryCount": 0}, "Memory": 0},
    }
