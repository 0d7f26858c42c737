"""A directory with thousands of entries is populated through the hashed-directory relink path."""

from __future__ import annotations

import subprocess
from pathlib import Path

from compositor import ImageSpec, LayerSource, build_image
from compositor.stage import BIG_DIR_ENTRIES

from .layer_builder import (
    OFFSET,
    Entry,
    cat,
    chardev,
    debugfs,
    directory,
    file,
    hardlink,
    ls,
    stat,
    symlink,
    write_tar,
)


async def test_big_directory_complete_and_clean(tmp_path: Path) -> None:
    count = BIG_DIR_ENTRIES + 1500
    entries: list[Entry] = [directory("usr/share/man/man1"), directory("dev")]
    entries += [
        file(f"usr/share/man/man1/cmd-{i:05d}.1.gz", f"page {i}".encode(), uid=i % 7)
        for i in range(count)
    ]
    entries += [
        directory("usr/share/man/man1/subdir"),
        file("usr/share/man/man1/name with space", b"space"),
        symlink("usr/share/man/man1/zz-link.1.gz", "cmd-00001.1.gz"),
        hardlink("usr/share/man/man1/zz-hard.1.gz", "usr/share/man/man1/cmd-00002.1.gz"),
        chardev("dev/null", 1, 3),
    ]
    layer = write_tar(tmp_path / "os.tar", entries)
    spec = ImageSpec(layers=(LayerSource("os", "os", layer),), size_gib=1, format="raw")
    built = await build_image(spec, work_dir=tmp_path / "work", cache_dir=tmp_path / "cache")
    names = ls(built.path, "/usr/share/man/man1")
    assert len(names) == count + 4 and len(set(names)) == len(names)
    assert cat(built.path, f"/usr/share/man/man1/cmd-{count - 1:05d}.1.gz") == (
        f"page {count - 1}".encode()
    )
    last = stat(built.path, f"/usr/share/man/man1/cmd-{count - 1:05d}.1.gz")
    assert last and last.uid == (count - 1) % 7 and last.links == 1
    hard = stat(built.path, "/usr/share/man/man1/zz-hard.1.gz")
    two = stat(built.path, "/usr/share/man/man1/cmd-00002.1.gz")
    assert hard and two and hard.inode == two.inode and hard.links == 2
    assert not [n for n in ls(built.path, "/") if n.startswith("layerbot-spread")]
    assert "Indirect levels" in debugfs(built.path, "htree_dump /usr/share/man/man1")
    check = subprocess.run(
        ["e2fsck", "-fn", f"{built.path}?offset={OFFSET}"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout
