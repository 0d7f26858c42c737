"""Content-addressed artifact cache: key -> artifact, written atomically (temp + rename).

Layout under cache_dir:
  images/<key>.<ext> + images/<key>.json   finished artifacts and their facts
  raw/<raw-key>.img                        the partitioned raw disk, shared by all formats
  layers/<digest>/                         extracted tar layers (layer_cache.py)
  tmp/                                     in-flight files (same filesystem, so rename is atomic),
                                           named after their process (see sweep.py)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .spec import FORMAT_EXTENSIONS, BuiltImage, ImageSpec
from .sweep import CACHE_TEMP_PREFIX, owner_prefix

#: 2: the superblock's lifetime-writes counter is pinned (the bytes of every ext4 disk changed)
_KEY_VERSION = 2


def raw_key(spec: ImageSpec, digests: Mapping[str, str]) -> str:
    """Identifies the raw disk: layer contents in order, disk settings, publish layer."""
    doc = {
        "v": _KEY_VERSION,
        "layers": [[layer.kind, digests[layer.name]] for layer in spec.layers],
        "size_gib": spec.size_gib,
        "filesystem": spec.filesystem,
        "extra_files": [
            [f.path, hashlib.sha256(f.content).hexdigest(), f.mode, f.uid, f.gid]
            for f in spec.extra_files
        ],
        "extra_symlinks": [list(pair) for pair in spec.extra_symlinks],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def image_key(spec: ImageSpec, digests: Mapping[str, str]) -> str:
    base = raw_key(spec, digests)
    return hashlib.sha256(f"{base}:{spec.format}".encode()).hexdigest()


@dataclass(frozen=True)
class Cache:
    root: Path

    def artifact(self, key: str, fmt: str) -> Path:
        return self.root / "images" / f"{key}.{FORMAT_EXTENSIONS[fmt]}"

    def facts(self, key: str) -> Path:
        return self.root / "images" / f"{key}.json"

    def raw(self, key: str) -> Path:
        return self.root / "raw" / f"{key}.img"

    def temp_dir(self) -> Path:
        path = self.root / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def new_temp(self, suffix: str) -> Path:
        fd, name = tempfile.mkstemp(dir=self.temp_dir(), suffix=suffix,
                                    prefix=owner_prefix(CACHE_TEMP_PREFIX))
        os.close(fd)
        os.unlink(name)
        return Path(name)

    def lookup(self, key: str, fmt: str, digests: Mapping[str, str], *,
               touch: bool = True) -> BuiltImage | None:
        """The cached artifact, or None. ``touch`` marks it as just used (see evict.py);
        a mere peek (the confirm card's "cached disk") passes False."""
        path = self.artifact(key, fmt)
        try:
            facts = json.loads(self.facts(key).read_text())
            size = path.stat().st_size
        except (OSError, ValueError):
            return None
        if touch:
            self.touch(path)
        return BuiltImage(
            path=path, format=fmt,  # type: ignore[arg-type]
            virtual_size=int(facts["virtual_size"]), file_size=size, cache_key=key,
            cache_hit=True, layer_digests=dict(digests),
        )

    def publish(self, tmp: Path, final: Path) -> None:
        """Move a finished temp file into place atomically."""
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)

    def store_artifact(self, tmp: Path, key: str, fmt: str, virtual_size: int) -> Path:
        facts_tmp = self.new_temp(".json")
        facts_tmp.write_text(json.dumps({"virtual_size": virtual_size, "format": fmt}))
        self.publish(facts_tmp, self.facts(key))
        final = self.artifact(key, fmt)
        self.publish(tmp, final)
        return final

    def retire(self, folder: Path) -> None:
        """Remove a directory of the cache: first renamed into tmp/ (it vanishes at once, and
        if this process dies while deleting it, sweep_stale finishes the job), then deleted."""
        grave = Path(tempfile.mkdtemp(dir=self.temp_dir(), suffix=".gone",
                                      prefix=owner_prefix(CACHE_TEMP_PREFIX)))
        try:
            os.rename(folder, grave)  # replaces the empty grave
        except FileNotFoundError:
            grave.rmdir()
            return
        shutil.rmtree(grave, ignore_errors=True)

    @staticmethod
    def touch(path: Path) -> None:
        """Mark a cached file as just used, so eviction takes it last."""
        with contextlib.suppress(OSError):  # a read-only or foreign cache still serves hits
            os.utime(path)

    @staticmethod
    def discard(path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
