"""Test helpers: write tar layers with exact headers (owners, devices, links) and read images back."""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import zstandard

from compositor.disk import PARTITION_START_SECTOR, SECTOR

OFFSET = PARTITION_START_SECTOR * SECTOR
MTIME = 1_700_000_000
TIB = 1 << 40


@dataclass(frozen=True)
class Entry:
    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    linkname: str = ""
    major: int = 0
    minor: int = 0
    mtime: int = MTIME


def file(name: str, data: bytes = b"", **kw: int) -> Entry:
    return Entry(name, tarfile.REGTYPE, data, **kw)


def directory(name: str, mode: int = 0o755, **kw: int) -> Entry:
    return Entry(name, tarfile.DIRTYPE, mode=mode, **kw)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, tarfile.SYMTYPE, mode=0o777, linkname=target)


def hardlink(name: str, target: str) -> Entry:
    return Entry(name, tarfile.LNKTYPE, linkname=target)


def chardev(name: str, major: int, minor: int, mode: int = 0o666) -> Entry:
    return Entry(name, tarfile.CHRTYPE, mode=mode, major=major, minor=minor)


def write_tar(path: Path, entries: list[Entry]) -> Path:
    """A layer archive; compression follows the suffix (.tar, .tar.gz/.tgz, .tar.zst)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = e.type
            info.mode = e.mode
            info.uid, info.gid = e.uid, e.gid
            info.mtime = e.mtime
            info.linkname = e.linkname
            info.devmajor, info.devminor = e.major, e.minor
            info.size = len(e.data) if e.type == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(e.data) if info.size else None)
    data = buf.getvalue()
    name = path.name
    if name.endswith((".tar.gz", ".tgz")):
        import gzip

        data = gzip.compress(data)
    elif name.endswith(".tar.zst"):
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def claims_a_tebibyte(path: Path) -> Path:
    """A few KB: two small members, then one whose header says 1 TiB and whose data stops
    after 4 KiB (no end of archive)."""
    scratch = write_tar(path.with_name(path.name + ".head"),
                        [directory("etc"), file("etc/os-release", b"ID=x\n")])
    head = scratch.read_bytes()
    scratch.unlink()
    info = tarfile.TarInfo("var/huge.img")
    info.size, info.mtime = TIB, MTIME
    raw = head.rstrip(b"\0")
    raw += bytes(-len(raw) % tarfile.BLOCKSIZE) + info.tobuf(format=tarfile.GNU_FORMAT)
    raw += b"x" * 4096
    if path.name.endswith(".gz"):
        import gzip

        raw = gzip.compress(raw)
    path.write_bytes(raw)
    return path


def debugfs(image: Path, request: str) -> str:
    done = subprocess.run(
        ["debugfs", "-R", request, f"{image}?offset={OFFSET}"],
        capture_output=True, text=True, check=True,
    )
    return done.stdout


def cat(image: Path, path: str) -> bytes:
    done = subprocess.run(
        ["debugfs", "-R", f"cat {path}", f"{image}?offset={OFFSET}"],
        capture_output=True, check=True,
    )
    return done.stdout


@dataclass(frozen=True)
class Stat:
    type: str
    mode: int
    uid: int
    gid: int
    size: int
    links: int
    inode: int
    mtime: int
    text: str


def stat(image: Path, path: str) -> Stat | None:
    out = debugfs(image, f"stat {path}")
    m = re.search(r"Inode: (\d+)\s+Type: ([\w ]+?)\s+Mode:\s+(\d+)", out)
    if not m:
        return None
    owner = re.search(r"User:\s+(\d+)\s+Group:\s+(\d+).*Size: (\d+)", out)
    links = re.search(r"Links: (\d+)", out)
    mtime = re.search(r"mtime: (0x[0-9a-f]+)", out)
    assert owner and links and mtime, out
    return Stat(
        m.group(2), int(m.group(3), 8), int(owner.group(1)), int(owner.group(2)),
        int(owner.group(3)), int(links.group(1)), int(m.group(1)),
        int(mtime.group(1), 16), out,
    )


def ls(image: Path, path: str) -> list[str]:
    out = debugfs(image, f"ls -p {path}")
    names = []
    for line in out.splitlines():
        parts = line.split("/")
        if len(parts) >= 7 and parts[5] not in (".", ".."):
            names.append(parts[5])
    return names


def extended_header_bomb(path: Path, kind: bytes, size: int) -> Path:
    """A gzip tar (ISA-L level 1: a few hundred KB) whose first header is a GNU long name
    (kind b"L") or a pax header (b"x") claiming `size` bytes, all zeros, then a small file."""
    from isal import isal_zlib

    header = tarfile.TarInfo("././@LongLink")
    header.type, header.size, header.mtime = kind, size, MTIME
    raw = header._create_header(  # type: ignore[attr-defined]
        header.get_info(), tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
    compressor = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)  # 31: gzip framing
    zeros = bytes(1 << 20)
    with open(path, "wb") as fh:
        fh.write(compressor.compress(raw))
        for _ in range(size >> 20):
            fh.write(compressor.compress(zeros))
        fh.write(compressor.compress(bytes(-size % tarfile.BLOCKSIZE)))
        after = tarfile.TarInfo("etc/after")
        fh.write(compressor.compress(after.tobuf(format=tarfile.GNU_FORMAT) + bytes(1024)))
        fh.write(compressor.flush())
    return path


def corrupt_sparse_map(path: Path) -> Path:
    """A pax tar whose only member says GNU.sparse.map=abc,def (tarfile's int() fails)."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("opt/sparse.bin")
        info.size, info.pax_headers = 1, {"GNU.sparse.map": "abc,def"}
        tar.addfile(info, io.BytesIO(b"x"))
    return path


def many_empty_files(path: Path, count: int) -> Path:
    """A gzip tar of `count` empty files, 1,000 to a folder (a few KB per 10,000)."""
    import gzip

    with gzip.open(path, "wb", compresslevel=1) as fh:
        for i in range(count):
            info = tarfile.TarInfo(f"d{i // 1000}/f{i:07d}")
            info.mtime = MTIME
            fh.write(info.tobuf(format=tarfile.GNU_FORMAT))
        fh.write(bytes(2 * tarfile.BLOCKSIZE))
    return path


def _debugfs_script(image: Path, commands: list[str], folder: Path) -> dict[str, str]:
    """Run commands in one debugfs session; each command's output, by command."""
    script = folder / "commands.debugfs"
    script.write_text("".join(c + "\n" for c in commands))
    done = subprocess.run(["debugfs", "-f", str(script), f"{image}?offset={OFFSET}"],
                          capture_output=True, text=True, errors="surrogateescape", check=True)
    wanted = set(commands)
    outputs: dict[str, list[str]] = {}
    current: list[str] = []
    for line in done.stdout.splitlines():
        if line.startswith("debugfs: ") and line[len("debugfs: "):] in wanted:
            current = outputs.setdefault(line[len("debugfs: "):], [])
            continue
        current.append(line)
    return {cmd: "\n".join(lines) for cmd, lines in outputs.items()}


def image_manifest(image: Path, folder: Path) -> dict[str, tuple[object, ...]]:
    """Every entry of an ext4 image (but lost+found), by path: type, mode, owner, size, mtime,
    link count, device numbers or symlink target, extended attributes, a regular file's content,
    and which other paths share its inode (hard links). Read with debugfs: no root needed."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[str] = []
    level = ["/"]
    while level:
        listed = _debugfs_script(image, [f"ls -p {d}" for d in level], folder)
        below = []
        for parent in level:
            for line in listed[f"ls -p {parent}"].splitlines():
                parts = line.split("/")
                if len(parts) < 7 or parts[5] in (".", "..", "") or parts[5] == "lost+found":
                    continue
                path = parent.rstrip("/") + "/" + parts[5]
                paths.append(path)
                if parts[2].startswith("04"):
                    below.append(path)
        level = below
    stats = _debugfs_script(image, [f"stat {p}" for p in paths] + [f"ea_list {p}" for p in paths],
                            folder)
    inodes: dict[str, list[str]] = {}
    facts: dict[str, list[object]] = {}
    dumps: dict[str, Path] = {}
    for i, path in enumerate(paths):
        out = stats[f"stat {path}"]
        head = re.search(r"Inode: (\d+)\s+Type: ([\w ]+?)\s+Mode:\s+(\d+)", out)
        owner = re.search(r"User:\s+(\d+)\s+Group:\s+(\d+).*Size: (\d+)", out)
        links = re.search(r"Links: (\d+)", out)
        mtime = re.search(r"mtime: (0x[0-9a-f:]+)", out)
        assert head and owner and links and mtime, out
        device = re.search(r"Device major/minor number: (\S+) \(hex (\S+)\)", out)
        target = re.search(r'Fast link dest: "(.*)"', out)
        inodes.setdefault(head.group(1), []).append(path)
        facts[path] = [head.group(2), head.group(3), owner.group(1), owner.group(2),
                       owner.group(3), mtime.group(1), links.group(1),
                       device.group(1) if device else None, target.group(1) if target else None,
                       stats[f"ea_list {path}"].strip(), head.group(1)]
        if head.group(2) == "regular":
            dumps[path] = folder / f"dump{i}"
    _debugfs_script(image, [f"dump {p} {out}" for p, out in dumps.items()], folder)
    manifest: dict[str, tuple[object, ...]] = {}
    for path, row in facts.items():
        *rest, inode = row
        content = dumps[path].read_bytes() if path in dumps else None
        manifest[path] = (*rest, content, tuple(sorted(inodes[str(inode)])))
    return manifest
