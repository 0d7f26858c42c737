"""Tar member headers read with bounded memory.

Python's tarfile reads a GNU long name or link (`L`/`K`), a pax header (`x`/`g`) or a GNU
sparse map whole into memory, at the size its header claims, inside `TarFile.next()`: a
520 KB gzip whose long-name header claims 512 MiB costs 512 MiB of memory before any member
is seen. `BoundedTarInfo` refuses such a header before reading it. The bound holds for
everything read ahead of one member (a chain of extended headers, a sparse map) and for the
pax global headers the archive keeps for all its members.
"""

from __future__ import annotations

import tarfile

#: Most bytes of extended headers one member may have (Linux paths are 4 KiB, xattrs 64 KiB)
MAX_EXTENDED_BYTES = 1 << 20

_KINDS = {
    tarfile.GNUTYPE_LONGNAME: "a GNU long name", tarfile.GNUTYPE_LONGLINK: "a GNU long link",
    tarfile.XHDTYPE: "a pax header", tarfile.SOLARIS_XHDTYPE: "a pax header",
    tarfile.XGLTYPE: "a pax global header", tarfile.GNUTYPE_SPARSE: "a GNU sparse map",
}


class ExtendedHeaderTooBig(tarfile.TarError):
    """Not a tarfile.HeaderError: TarFile.next() would take some of those for the archive's
    end and stop reading silently."""

    def __init__(self, kind: str, size: int, offset: int) -> None:
        super().__init__(
            f"an extended header of {size} bytes ({kind}, at byte {offset} of the tar) is more "
            f"than the {MAX_EXTENDED_BYTES >> 20} MiB a member's extended headers may take")
        self.size = size


class BoundedTarInfo(tarfile.TarInfo):
    """Pass as `tarfile.open(..., tarinfo=BoundedTarInfo)`. tarfile calls these methods with
    the TarFile positionally (its parameter is named `tarfile`, shadowing the module)."""

    def _refuse_over(self, total: int, size: int) -> None:
        if total > MAX_EXTENDED_BYTES:
            raise ExtendedHeaderTooBig(_KINDS.get(self.type, "an extended header"), size,
                                       self.offset)

    def _member_headers(self, tar: tarfile.TarFile, more: int) -> int:
        """Bytes of headers read for the member being read once `more` are: tar.offset stays
        at its first header until its last extended header is processed."""
        assert tar.fileobj is not None
        return tar.fileobj.tell() + more - tar.offset

    def _proc_gnulong(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        self._refuse_over(self._member_headers(tar, self._block(self.size)), self.size)
        return super()._proc_gnulong(tar)  # type: ignore[misc]

    def _proc_pax(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        self._refuse_over(self._member_headers(tar, self._block(self.size)), self.size)
        if self.type == tarfile.XGLTYPE:  # kept for every later member
            kept = sum(len(k) + len(v) for k, v in tar.pax_headers.items())
            self._refuse_over(kept + self.size, kept + self.size)
        return super()._proc_pax(tar)  # type: ignore[misc]

    def _proc_sparse(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        """tarfile's, reading the old GNU format's extension blocks against the bound."""
        structs, isextended, origsize = self._sparse_structs  # type: ignore[attr-defined]
        del self._sparse_structs  # type: ignore[attr-defined]
        assert tar.fileobj is not None
        while isextended:
            ahead = self._member_headers(tar, tarfile.BLOCKSIZE)
            self._refuse_over(ahead, ahead)
            buf = tar.fileobj.read(tarfile.BLOCKSIZE)
            if len(buf) < tarfile.BLOCKSIZE:
                raise tarfile.ReadError("the archive ends inside a GNU sparse header")
            pos = 0
            for _ in range(21):
                try:
                    offset = tarfile.nti(buf[pos:pos + 12])  # type: ignore[attr-defined]
                    numbytes = tarfile.nti(buf[pos + 12:pos + 24])  # type: ignore[attr-defined]
                except ValueError:
                    break
                if offset and numbytes:
                    structs.append((offset, numbytes))
                pos += 24
            isextended = bool(buf[504])
        self.sparse = structs
        self.offset_data = tar.fileobj.tell()
        tar.offset = self.offset_data + self._block(self.size)
        self.size = origsize
        return self

    def _proc_gnusparse_01(self, member: tarfile.TarInfo, pax_headers: dict[str, str]) -> None:
        try:
            super()._proc_gnusparse_01(member, pax_headers)  # type: ignore[misc]
        except ValueError:
            value = pax_headers["GNU.sparse.map"]
            excerpt = value[:60] + ("..." if len(value) > 60 else "")
            raise tarfile.ReadError(f"a corrupt pax header (at byte {self.offset} of the tar): "
                                    f"GNU.sparse.map={excerpt!r} is not a list of numbers") from None

    def _proc_gnusparse_10(
        self, member: tarfile.TarInfo, pax_headers: dict[str, str], tar: tarfile.TarFile
    ) -> None:
        """tarfile's, reading the map (at the start of the member's data) against the bound.
        The member's header is processed by now, so tar.offset no longer marks the start."""
        assert tar.fileobj is not None
        read = tarfile.BLOCKSIZE
        buf = tar.fileobj.read(tarfile.BLOCKSIZE)
        fields_text, buf = buf.split(b"\n", 1)
        fields = int(fields_text)
        sparse: list[int] = []
        while len(sparse) < fields * 2:
            while b"\n" not in buf:
                read += tarfile.BLOCKSIZE
                self._refuse_over(read, read)
                more = tar.fileobj.read(tarfile.BLOCKSIZE)
                if not more:
                    raise tarfile.ReadError("the archive ends inside a GNU sparse map")
                buf += more
            number, buf = buf.split(b"\n", 1)
            sparse.append(int(number))
        member.offset_data = tar.fileobj.tell()
        member.sparse = list(zip(sparse[::2], sparse[1::2], strict=False))
