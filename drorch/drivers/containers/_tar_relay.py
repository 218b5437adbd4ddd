"""Data that travels between sites as tar streams: relayed chunk by chunk, never whole on this machine.

Each file's size and SHA-256 are noted on the way through, so the copy can be read back where it
landed and checked before anything is started from it. A private relay rewrites every entry to be
root's and readable by root only: a checkpoint holds a process's memory, secrets included.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import queue
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

CHUNK = 1 << 20
_DONE = object()


@dataclass
class Manifest:
    """Every regular file of a tree: its path in the tar, its size and its SHA-256."""

    files: dict[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(size for size, _ in self.files.values())

    def differences(self, other: Manifest) -> list[str]:
        """What `other` (the copy) lacks or holds otherwise, one line per file."""
        out = []
        for path, (size, digest) in sorted(self.files.items()):
            got = other.files.get(path)
            if got is None:
                out.append(f"{path} missing")
            elif got[0] != size:
                out.append(f"{path}: {got[0]} bytes, not {size}")
            elif got[1] != digest:
                out.append(f"{path}: checksum differs")
        out.extend(f"{path} not in the original" for path in sorted(set(other.files) - set(self.files)))
        return out


class _ChunkReader(io.RawIOBase):
    """A file object over an iterator of byte chunks, for tarfile's stream mode."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]  # io's stub takes any buffer; tarfile hands a memoryview
        while not self._left:
            try:
                self._left = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


class _Hashing(io.RawIOBase):
    """Reads a member's data through, hashing it and counting its bytes."""

    def __init__(self, inner: IO[bytes], counted: Callable[[int], None] | None) -> None:
        self._inner, self._counted = inner, counted
        self.sha = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self.sha.update(data)
        self.size += len(data)
        if self._counted is not None and data:
            self._counted(len(data))
        return data


def _entries(chunks: Iterable[bytes], counted: Callable[[int], None] | None = None
             ) -> Iterator[tuple[tarfile.TarInfo, _Hashing | None]]:
    """Each member of a tar stream with its data, hashed as it is read."""
    with tarfile.open(fileobj=io.BufferedReader(_ChunkReader(chunks), CHUNK), mode="r|") as tar:
        for member in tar:
            data = tar.extractfile(member) if member.isfile() else None
            yield member, (_Hashing(data, counted) if data is not None else None)


def manifest(chunks: Iterable[bytes]) -> Manifest:
    """The manifest of a tar stream, read to its end."""
    out = Manifest()
    for member, data in _entries(chunks):
        if data is not None:
            while data.read(CHUNK):
                pass
            out.files[member.name] = (data.size, data.sha.hexdigest())
    return out


class _QueueWriter(io.RawIOBase):
    """tarfile's output, gathered into chunks for a consumer in another thread; gives up once it is gone."""

    def __init__(self, out: queue.Queue[object], gone: threading.Event) -> None:
        self._out, self._gone = out, gone
        self._buf = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]  # io's stub takes any buffer; tarfile writes bytes
        self._buf += data
        if len(self._buf) >= CHUNK:
            self.flush_chunk()
        return len(data)

    def flush_chunk(self) -> None:
        if self._buf:
            self._put(bytes(self._buf))
            self._buf.clear()

    def _put(self, item: object) -> None:
        while not self._gone.is_set():
            try:
                self._out.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        raise BrokenPipeError("the receiving side stopped reading")


@dataclass
class Relay:
    """A tar stream on its way from one endpoint to another: iterate `chunks` to send it on; once they
    are all sent, `manifest` describes what went through."""

    chunks: Iterator[bytes]
    manifest: Manifest


def relay(chunks: Iterable[bytes], private: bool = False, counted: Callable[[int], None] | None = None,
          inside: bool = False) -> Relay:
    """Pass a tar stream on, member by member, noting each file's size and checksum (by its name as read);
    with `private`, every entry becomes root's, folders 0700 and files 0600; with `inside`, the stream's top
    folder is left out and its contents sent as they are inside it. Memory use is a few chunks, whatever the
    size."""
    out: queue.Queue[object] = queue.Queue(maxsize=4)
    gone = threading.Event()
    seen = Manifest()

    def produce() -> None:
        writer = _QueueWriter(out, gone)
        try:
            with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for member, data in _entries(chunks, counted):
                    name = member.name
                    if inside:
                        member.name = name.partition("/")[2]
                        if member.islnk():
                            member.linkname = member.linkname.partition("/")[2]
                        if not member.name:
                            continue
                    if private:
                        member.uid = member.gid = 0
                        member.uname = member.gname = "root"
                        member.mode = 0o700 if member.isdir() else 0o600
                    tar.addfile(member, data)
                    if data is not None:
                        seen.files[name] = (data.size, data.sha.hexdigest())
            writer.flush_chunk()
            writer._put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it in its own thread
            with contextlib.suppress(BrokenPipeError):
                writer._put(exc)

    def consume() -> Iterator[bytes]:
        thread = threading.Thread(target=produce, name="drorch-relay", daemon=True)
        thread.start()
        try:
            while True:
                item = out.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, bytes)
                yield item
        finally:
            gone.set()
            thread.join()

    return Relay(consume(), seen)
