"""Tar streams relayed between sites: nothing lost or changed on the way, private copies root's only,
and a copy that differs is named file by file."""

from __future__ import annotations

import io
import tarfile

from hypothesis import given, settings
from hypothesis import strategies as st

from drorch.drivers.containers._tar_relay import Manifest, manifest, relay

names = st.text("abcdefgh", min_size=1, max_size=6)
trees = st.dictionaries(names, st.binary(max_size=3 << 20), min_size=1, max_size=5)


def tar_of(files: dict[str, bytes], top: str = "ck") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(top)
        info.type, info.mode, info.uid = tarfile.DIRTYPE, 0o755, 1000
        tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode, info.uid = len(data), 0o644, 1000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


@settings(max_examples=30, deadline=None)
@given(trees, st.integers(1, 1 << 16), st.booleans())
def test_what_is_relayed_arrives_whole_and_is_described(files: dict[str, bytes], size: int, private: bool) -> None:
    counted: list[int] = []
    sent = relay(chunked(tar_of(files), size), private=private, counted=counted.append)
    out = b"".join(sent.chunks)
    assert sent.manifest.differences(manifest([out])) == []
    assert sent.manifest.size == sum(len(d) for d in files.values()) == sum(counted)
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        got = {m.name: m for m in tar.getmembers()}
        assert {n: tar.extractfile(m).read() for n, m in got.items() if m.isfile()} == {  # type: ignore[union-attr]
            f"ck/{n}": d for n, d in files.items()}
        if private:
            assert all(m.uid == 0 and m.mode == (0o700 if m.isdir() else 0o600) for m in got.values())
        else:
            assert all(m.uid == 1000 for m in got.values())


def test_a_copy_that_differs_is_named_file_by_file() -> None:
    sent = Manifest({"ck/a": (3, "x"), "ck/b": (4, "y"), "ck/c": (1, "z")})
    landed = Manifest({"ck/a": (3, "x"), "ck/b": (4, "other"), "ck/d": (1, "z")})
    assert sent.differences(landed) == ["ck/b: checksum differs", "ck/c missing", "ck/d not in the original"]
    assert sent.differences(Manifest({**sent.files, "ck/a": (2, "x")})) == ["ck/a: 2 bytes, not 3"]


def test_a_broken_stream_raises_where_it_is_read() -> None:
    data = tar_of({"pages": b"x" * 100_000})
    sent = relay([data[:20_000]])  # cut short, as a dropped connection would
    try:
        b"".join(sent.chunks)
    except tarfile.ReadError:
        return
    raise AssertionError("a truncated stream went through")
