"""Tar headers tarfile reads whole into memory (GNU long names, pax headers, sparse maps) are
refused before they are read when they are bigger than a member's extended headers may be,
and a corrupt one is a clear error naming the layer, never a traceback."""

from __future__ import annotations

import io
import tarfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from compositor import LayerError, LayerSource
from compositor.firstboot import publish_layer
from compositor.tarheaders import MAX_EXTENDED_BYTES
from compositor.tarlayer import check_archive, extract_tar_layer

from .layer_builder import corrupt_sparse_map, extended_header_bomb

MIB = 1 << 20


def _peak_python_memory(action: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        action()
    except LayerError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("kind", "what"), [(b"L", "a GNU long name"), (b"x", "a pax header")])
def test_a_huge_extended_header_is_refused_before_it_is_read(
    tmp_path: Path, kind: bytes, what: str
) -> None:
    """A few hundred KB of gzip whose first header claims 256 MiB: check, extraction and the
    guest inspection fail at once, naming the layer, without reading it into memory."""
    bomb = extended_header_bomb(tmp_path / "bomb.tar.gz", kind, 256 * MIB)
    layer = LayerSource("bomb", "app", bomb)
    dest = tmp_path / "dest"
    dest.mkdir()
    expected = (f"layer 'bomb' ({bomb}): cannot read the archive: an extended header of "
                f"{256 * MIB} bytes ({what}, at byte 0 of the tar) is more than the 1 MiB")
    started = time.monotonic()
    for action in (lambda: check_archive("bomb", bomb),
                   lambda: extract_tar_layer(layer, dest, threading.Event()),
                   lambda: publish_layer([layer], "ext4", [], "auto", 1)):
        with pytest.raises(LayerError) as info:
            action()
        assert str(info.value).startswith(expected), info.value
        assert _peak_python_memory(action) < 16 * MIB
    assert time.monotonic() - started < 10


def _tar_with_long_names(path: Path, lengths: list[int]) -> Path:
    """One member preceded by a chain of GNU long-name headers of these lengths."""
    raw = b""
    for length in lengths:
        header = tarfile.TarInfo("././@LongLink")
        header.type, header.size = tarfile.GNUTYPE_LONGNAME, length
        raw += header._create_header(  # type: ignore[attr-defined]
            header.get_info(), tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
        raw += b"a" * length + bytes(-length % tarfile.BLOCKSIZE)
    member = tarfile.TarInfo("short")
    path.write_bytes(raw + member.tobuf(format=tarfile.GNU_FORMAT) + bytes(1024))
    return path


def test_a_chain_of_extended_headers_counts_as_one(tmp_path: Path) -> None:
    """Each of three long names is under the bound; together, before one member, they are not.
    A single long name well under it still reads."""
    chain = _tar_with_long_names(tmp_path / "chain.tar", [MAX_EXTENDED_BYTES // 2] * 3)
    with pytest.raises(LayerError, match="an extended header of 524288 bytes"):
        check_archive("chain", chain)
    fine = _tar_with_long_names(tmp_path / "fine.tar", [5000])
    assert check_archive("fine", fine) > 0


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_a_corrupt_sparse_map_is_a_layer_error(tmp_path: Path, suffix: str) -> None:
    plain = corrupt_sparse_map(tmp_path / "sparse.tar")
    path = plain
    if suffix == ".tar.gz":
        import gzip

        path = tmp_path / "sparse.tar.gz"
        path.write_bytes(gzip.compress(plain.read_bytes()))
    dest = tmp_path / "dest"
    dest.mkdir()
    expected = (f"layer 'sp' ({path}): cannot read the archive: a corrupt pax header (at byte 0 "
                f"of the tar): GNU.sparse.map='abc,def' is not a list of numbers")
    for action in (lambda: check_archive("sp", path),
                   lambda: extract_tar_layer(LayerSource("sp", "app", path), dest,
                                             threading.Event()),
                   lambda: publish_layer([LayerSource("sp", "app", path)], "ext4", [], "auto")):
        with pytest.raises(LayerError) as info:
            action()
        assert str(info.value) == expected


def test_a_sparse_1_0_map_is_read_against_the_bound(tmp_path: Path) -> None:
    """GNU sparse 1.0 keeps its map in the member's data: a map of more than 1 MiB of
    newline-free digits is refused (tarfile would grow its buffer block by block)."""
    data = b"1\n" + b"7" * (2 * MAX_EXTENDED_BYTES)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("opt/sparse.bin")
        info.size = len(data)
        info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                            "GNU.sparse.name": "opt/sparse.bin", "GNU.sparse.realsize": "10"}
        tar.addfile(info, io.BytesIO(data))
    path = tmp_path / "sparse10.tar"
    path.write_bytes(buf.getvalue())
    with pytest.raises(LayerError, match=r"a GNU sparse map|an extended header of"):
        check_archive("sp10", path)
