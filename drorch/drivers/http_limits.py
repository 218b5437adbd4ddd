"""What drorch reads from a Docker, Podman or LXD service, and what it says when one cannot be asked.

Every answer is read within a size bound, whatever its Content-Type says: a daemon that is broken, or is not
what the playbook says, cannot fill drorch's memory with an endless document. Only the tar streams that
drorch asks for by name (a checkpoint exported, an archive of files, an image saved) pass unbounded, read
chunk by chunk by their callers. A redirect is never followed: drorch talks only to the endpoint the
playbook names."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import requests

from drorch import input_limits
from drorch.errors import InputError

MAX_JSON_BYTES = 64 << 20  # `GET /containers/json?all=1` of 10,000 containers is about 30 MiB
# The endpoints whose successful answers are tar streams: archives, saved images, exported checkpoints.
STREAMS = re.compile(r"/containers/[^/]+/archive|/images/.+/get|/images/get|/libpod/containers/[^/]+/checkpoint")


class ResponseTooLarge(requests.RequestException):
    """A service's answer passed MAX_JSON_BYTES."""


class Redirected(requests.RequestException):
    """A service answered with a redirect, which drorch does not follow."""


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


def _guarded(response: requests.Response, *_args: Any, **_kwargs: Any) -> requests.Response:
    path = response.request.path_url.split("?")[0] if response.request else "?"
    if response.is_redirect:
        response.close()
        raise Redirected(f"answered {path} with a redirect to {response.headers.get('Location', '')[:200]!r}, "
                         "which drorch does not follow: it talks only to the endpoint the playbook names")
    if response.status_code < 300 and STREAMS.search(path):
        return response
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > MAX_JSON_BYTES:
        response.close()
        raise ResponseTooLarge(f"its answer to {path} is {int(length) >> 20} MiB of JSON, past the limit of "
                               f"{MAX_JSON_BYTES >> 20} MiB")
    response.raw = _Capped(response.raw, MAX_JSON_BYTES, path)
    return response


def guard_answers(session: requests.Session) -> None:
    """Every answer this session reads is bounded and none redirects it (requests runs response hooks before it
    reads a body or follows a redirect)."""
    session.hooks["response"].append(_guarded)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and what it wraps: requests wraps urllib3's, which wraps the socket's."""
    seen: set[int] = set()
    at: BaseException | None = exc
    while at is not None and id(at) not in seen:
        seen.add(id(at))
        yield at
        wrapped = getattr(at, "reason", None)
        if not isinstance(wrapped, BaseException):
            first = at.args[0] if at.args else None
            wrapped = at.__cause__ or at.__context__ or (first if isinstance(first, BaseException) else None)
        at = wrapped


def failure(exc: Exception) -> str:
    """Why a service could not be asked, in the words of an operator rather than urllib3's: what follows the
    service's name ("site b: Docker at tcp://...") in a message."""
    causes = list(_causes(exc))
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return "refused the connection"
    if any(isinstance(c, socket.gaierror) for c in causes):
        return "does not answer: its host name does not resolve"
    if any(isinstance(c, requests.Timeout | TimeoutError) for c in causes):
        return "does not answer: no answer within the time allowed"
    if any(isinstance(c, FileNotFoundError) for c in causes):
        return "does not answer: no socket at that path"
    if any(isinstance(c, ConnectionResetError | BrokenPipeError) for c in causes):
        return "does not answer: it closed the connection"
    errno = next((c for c in causes if isinstance(c, OSError) and c.strerror), None)
    if errno is not None:
        return f"does not answer: {errno.strerror}"
    return f"does not answer: {' '.join(str(exc).split())[:200] or type(exc).__name__}"


def tls_problem(files: Iterable[str]) -> str | None:
    """Why one of a client's TLS files cannot be used ("/x/key.pem: not a regular file (a named pipe)"), or None:
    checked before the TLS library reads them, which would wait on a FIFO for ever."""
    for name in files:
        try:
            if not os.access(name, os.R_OK):
                return f"{name} cannot be read"
            input_limits.check_file(Path(name), input_limits.MAX_SECRET_BYTES)
        except InputError as exc:
            return exc.problems[0]
    return None
