"""Answers of a Docker or Podman service read within a size bound: a daemon that is broken, or is not what the
playbook says, cannot fill drorch's memory with an endless JSON document.

Tar streams (checkpoints, volumes, images) are read chunk by chunk by their callers and pass unbounded."""

from __future__ import annotations

from typing import Any

import requests

MAX_JSON_BYTES = 64 << 20  # `GET /containers/json?all=1` of 10,000 containers is about 30 MiB


class ResponseTooLarge(requests.RequestException):
    """A service's JSON answer passed MAX_JSON_BYTES."""


class _Capped:
    """A response body that raises once more than `limit` bytes were read from it."""

    def __init__(self, raw: Any, limit: int, url: str) -> None:
        self._raw, self._limit, self._url, self._read = raw, limit, url, 0

    def read(self, amount: int | None = None, *args: Any, **kwargs: Any) -> bytes:
        data: bytes = self._raw.read(amount, *args, **kwargs)
        self._read += len(data)
        if self._read > self._limit:
            self._raw.close()
            raise ResponseTooLarge(f"its answer to {self._url} passed {self._limit >> 20} MiB of JSON: not read on")
        return data

    def __getattr__(self, name: str) -> Any:
        if name == "stream":  # requests then reads through read() above
            raise AttributeError(name)
        return getattr(self._raw, name)


def _bounded(response: requests.Response, *_args: Any, **_kwargs: Any) -> requests.Response:
    if "json" not in response.headers.get("Content-Type", ""):
        return response
    length = response.headers.get("Content-Length", "")
    path = response.request.path_url.split("?")[0] if response.request else "?"
    if length.isdigit() and int(length) > MAX_JSON_BYTES:
        response.close()
        raise ResponseTooLarge(f"its answer to {path} is {int(length) >> 20} MiB of JSON, past the limit of "
                               f"{MAX_JSON_BYTES >> 20} MiB")
    response.raw = _Capped(response.raw, MAX_JSON_BYTES, path)
    return response


def limit_json_answers(session: requests.Session) -> None:
    """Every JSON answer this session reads is bounded (requests runs response hooks before reading a body)."""
    session.hooks["response"].append(_bounded)
