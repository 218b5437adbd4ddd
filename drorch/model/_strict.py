"""The base of every playbook model (unknown keys are errors, values are frozen and finite), and its names."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Name = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]  # a name drorch keys by
Loc = tuple[str | int, ...]  # where in a playbook a value is, as its keys and list positions lead to it


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
