"""build_image and cache_lookup: digests -> cache -> layers -> merged tree -> disk -> format."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import functools
import os
import shutil
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import convert as converter
from . import scratch
from .budget import SpaceBudget
from .cache import Cache, image_key, raw_key
from .digest import cached_digest, layer_digest
from .dirlayer import scan_dir_layer
from .errors import (
    CompositorError,
    HostInodesError,
    HostSpaceError,
    LayerError,
    ScratchFull,
    ToolFailedError,
    ToolMissingError,
    host_full,
)
from .evict import ArtifactHold, hold_artifact
from .ext4 import build_ext4_disk
from .identity import DiskIdentity, KeyIdentity, build_epoch
from .layer_cache import TREE, BrokenEntry, LayerCache, layer_cache_enabled
from .layertree import LayerTree
from .merge import Merger
from .ntfs import build_ntfs_disk
from .progress import Reporter
from .publish_layer import write_publish_layer
from .spec import FORMAT_EXTENSIONS, BuiltImage, ExtraFile, ImageSpec, LayerSource, ProgressCallback
from .tarlayer import extract_tar_layer
from .threads import in_thread, settle
from .tools import required_tools

DiskBuilder = Callable[..., Awaitable[None]]
#: filesystem -> builder(staging, meta, raw, work, size_gib, identity, cancel, report)
FILESYSTEM_BUILDERS: dict[str, DiskBuilder] = {"ext4": build_ext4_disk, "ntfs": build_ntfs_disk}
#: the raw disk's name in a work folder in RAM
RAW_NAME = "disk.img"


#: makes the publish layer (compositor.firstboot.publish_layer with its arguments bound)
PublishLayerMaker = Callable[[], tuple[tuple[ExtraFile, ...], tuple[tuple[str, str], ...]]]


async def build_image(
    spec: ImageSpec, *, work_dir: Path, cache_dir: Path,
    progress: ProgressCallback | None = None, ram_scratch: bool = True,
    ram_dir: Path | None = None, publish_layer: PublishLayerMaker | None = None,
) -> BuiltImage:
    """Composite the spec's layers into a disk image of spec.format (or reuse the cached one).

    Temporary files live in a fresh directory, in RAM when the layers fit (compositor.scratch;
    ``ram_scratch=False`` never, ``ram_dir`` a tmpfs folder other than /dev/shm), else under
    work_dir, and are removed afterwards, also on failure and cancellation; child processes are
    killed when the task is cancelled.

    ``publish_layer`` makes the spec's extra files and symlinks (which it then must not have)
    while the layers are hashed and extracted: the guest inspection reads the same archives,
    and the first read of a cold archive is most of its cost.
    """
    validate(spec)
    report = Reporter(progress)
    cache = Cache(Path(cache_dir))
    inspecting = asyncio.ensure_future(asyncio.to_thread(publish_layer)) if publish_layer else None
    try:
        remembered = await asyncio.to_thread(_remembered_digests, spec, Path(cache_dir))
        if remembered is not None:
            if inspecting is not None:  # the key needs the publish layer: nothing to overlap
                spec = _with_publish_layer(spec, await inspecting)
            hit = cache.lookup(image_key(spec, remembered), spec.format, remembered)
            if hit is not None:
                report.stage("reusing the cached image", 1.0)
                return hit
        _check_tools(spec)
        try:
            return await _build(spec, Path(work_dir), cache, remembered, report,
                                ram_dir if ram_scratch else None, ram_scratch, inspecting)
        except ScratchFull:
            report.stage("the layers are larger than the memory set aside: building on disk", 0.0)
            return await _build(spec, Path(work_dir), cache, remembered, report, None, False,
                                inspecting)
    except CompositorError as exc:
        # the layers' own problem first, as when the inspection ran before the build
        if inspecting is not None:
            await settle(inspecting)
            found = None if inspecting.cancelled() else inspecting.exception()
            if isinstance(found, CompositorError) and found is not exc:
                raise found from exc
        raise
    finally:
        if inspecting is not None:
            await settle(inspecting)


def _with_publish_layer(spec: ImageSpec, made: tuple[tuple[ExtraFile, ...],
                                                     tuple[tuple[str, str], ...]]) -> ImageSpec:
    files, links = made
    return dataclasses.replace(spec, extra_files=tuple(files), extra_symlinks=tuple(links))


async def _build(
    spec: ImageSpec, work_dir: Path, cache: Cache, remembered: dict[str, str] | None,
    report: Reporter, ram_dir: Path | None, use_ram: bool,
    inspecting: asyncio.Future[Any] | None = None,
) -> BuiltImage:
    place = await _choose_place(spec, work_dir, ram_dir, use_ram)
    work = place.work
    cancel = threading.Event()
    temps: list[Path] = []
    holds: list[ArtifactHold] = []
    # Extracted layers are kept where extracting is expensive: on disk. In RAM, extracting a
    # layer again costs less than copying its cached files in (bench/republish.py: 4.4 s
    # against 6.6 s for a republish of 1 GiB after one changed layer).
    layers = LayerCache(cache.root) if layer_cache_enabled() and not place.in_ram else None
    hashing: list[asyncio.Future[str]] = []
    preparing: asyncio.Future[list[LayerTree]] | None = None
    sweeping: asyncio.Future[None] | None = None
    try:
        if remembered is not None:
            digests = remembered
        else:
            # Unknown layers: hash them while extracting, so a miss costs no extra pass.
            report.stage("computing layer digests", 0.0)
            hashing = _hash_layers(spec, cache.root, cancel)
            preparing = asyncio.ensure_future(_prepare_layers(
                spec, work, cancel, report, layers, hashing, place.ram_limit))
            results = await asyncio.gather(*hashing)
            digests = {layer.name: d for layer, d in zip(spec.layers, results, strict=True)}
        if inspecting is not None and not spec.extra_files and not spec.extra_symlinks:
            spec = _with_publish_layer(spec, await inspecting)
        key = image_key(spec, digests)
        if (hit := cache.lookup(key, spec.format, digests)) is not None:
            report.stage("reusing the cached image", 1.0)
            return hit
        raw = cache.raw(raw_key(spec, digests))
        # Held until converted, so no runner's cache eviction removes it meanwhile.
        raw_hold = _hold_cached(raw)
        if raw_hold is not None:
            holds.append(raw_hold)
            await asyncio.to_thread(cache.touch, raw)
        else:
            # In RAM, the raw disk is only a step towards the artifact: not kept in the cache
            # (writing it to disk would cost as much as the artifact itself).
            keep_raw = not place.in_ram or spec.format == "raw"
            raw_tmp = cache.new_temp(".img") if keep_raw else work / RAW_NAME
            temps.append(raw_tmp)
            if preparing is None:
                preparing = asyncio.ensure_future(_prepare_layers(
                    spec, work, cancel, report, layers, _known(digests, spec), place.ram_limit))
            trees = await preparing
            await _build_raw(spec, trees, work, raw_tmp, raw_key(spec, digests), cancel, report)
            if layers is not None:
                layers.release()
            if keep_raw:
                holds.append(hold_artifact(raw_tmp))
                cache.publish(raw_tmp, raw)
            else:
                raw = raw_tmp
            # The staging files are not needed any more: delete them while converting.
            staging = [child for child in work.iterdir() if child != raw]
            sweeping = asyncio.ensure_future(asyncio.to_thread(_remove_all, staging))
        report.stage(f"converting to {spec.format}", 0.8)
        out_tmp = cache.new_temp("." + FORMAT_EXTENSIONS[spec.format])
        temps.append(out_tmp)
        span = report.span(f"converting to {spec.format}", 0.8, 0.99)
        virtual = await converter.convert(raw, spec.format, out_tmp, span,
                                          KeyIdentity(raw_key(spec, digests)))
        final = await asyncio.to_thread(cache.store_artifact, out_tmp, key, spec.format, virtual)
        report.stage("done", 1.0)
        return BuiltImage(
            path=final, format=spec.format, virtual_size=virtual,
            file_size=final.stat().st_size, cache_key=key, cache_hit=False,
            layer_digests=digests,
        )
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            folder = Path(exc.filename).parent if exc.filename else None
            if _ram_ran_out(place, folder):
                raise ScratchFull() from exc
            raise HostSpaceError(folder or work_dir, "compositing") from exc
        where = f" ({exc.filename})" if exc.filename else ""
        raise CompositorError(f"building the image failed: {exc.strerror or exc}{where}") from exc
    except (HostSpaceError, HostInodesError) as exc:
        if _ram_ran_out(place, exc.folder):
            raise ScratchFull() from exc
        raise
    except ToolFailedError as exc:  # e.g. wimlib capturing the tree into a full RAM folder
        if _ram_ran_out(place, None):
            raise ScratchFull() from exc
        raise
    finally:
        for hold in holds:
            hold.release()
        cancel.set()
        for pending in (preparing, sweeping, *hashing):
            if pending is not None:
                await settle(pending, cancel=True)
        await _cleanup(work, temps, layers)
        place.release()


async def _choose_place(spec: ImageSpec, work_dir: Path, ram_dir: Path | None,
                        use_ram: bool) -> scratch.Scratch:
    """scratch.choose in a thread; a build cancelled meanwhile still gives its place back."""
    copies = scratch.NTFS_COPIES if spec.filesystem == "ntfs" else scratch.EXT4_COPIES
    choosing = asyncio.ensure_future(asyncio.to_thread(
        scratch.choose, work_dir, spec.layers, spec.size_gib << 30, ram_dir=ram_dir,
        use_ram=use_ram, copies=copies))
    try:
        return await asyncio.shield(choosing)
    except asyncio.CancelledError:
        place = await choosing
        place.release()
        await asyncio.to_thread(shutil.rmtree, place.work, True)
        raise


def _ram_ran_out(place: scratch.Scratch, folder: Path | None) -> bool:
    """Whether a failure means the RAM folder is full: it names a path in it, or names none
    while the tmpfs has (next to) nothing left."""
    if not place.in_ram:
        return False
    if folder is not None:
        return folder.is_relative_to(place.work)
    return host_full(place.work)


def cache_lookup(spec: ImageSpec, *, cache_dir: Path) -> BuiltImage | None:
    """The cached artifact for spec, or None. Never reads layer data: a layer whose digest is
    not remembered (new or changed since its last build) means None."""
    digests = _remembered_digests(spec, Path(cache_dir))
    if digests is None:
        return None
    return Cache(Path(cache_dir)).lookup(image_key(spec, digests), spec.format, digests,
                                         touch=False)


def digests_known(layers: Sequence[LayerSource], *, cache_dir: Path) -> bool:
    """Every layer's digest is remembered (built before, unchanged since): without that,
    cache_lookup cannot find anything, so a caller need not look into the layers at all."""
    return all(cached_digest(layer.source, cache_dir=Path(cache_dir)) is not None
               for layer in layers)


def validate(spec: ImageSpec) -> None:
    if spec.format not in FORMAT_EXTENSIONS:
        raise CompositorError(f"unknown image format {spec.format!r}")
    if spec.filesystem not in FILESYSTEM_BUILDERS:
        raise CompositorError(f"{spec.filesystem}: not yet supported")
    if spec.size_gib < 1:
        raise CompositorError(f"disk size must be at least 1 GiB, not {spec.size_gib}")
    if not spec.layers:
        raise CompositorError("the image has no layers")
    names = [layer.name for layer in spec.layers]
    if len(set(names)) != len(names):
        raise CompositorError(f"layer names must be unique: {names}")
    for layer in spec.layers:
        if not Path(layer.source).exists():
            raise LayerError(layer.name, str(layer.source), "the layer source does not exist")


def _check_tools(spec: ImageSpec) -> None:
    for tool in required_tools([spec.format], [spec.filesystem]):
        if tool.path is None:
            raise ToolMissingError(tool.name, tool.package)


def _hash_layers(
    spec: ImageSpec, cache_dir: Path, cancel: threading.Event
) -> list[asyncio.Future[str]]:
    """Each layer's digest, computed in its own thread (spec.layers' order)."""
    return [asyncio.ensure_future(in_thread(
        cancel, functools.partial(layer_digest, cache_dir=cache_dir, layer=layer.name),
        Path(layer.source))) for layer in spec.layers]


def _known(digests: Mapping[str, str], spec: ImageSpec) -> list[asyncio.Future[str]]:
    out: list[asyncio.Future[str]] = []
    for layer in spec.layers:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        future.set_result(digests[layer.name])
        out.append(future)
    return out


def _remembered_digests(spec: ImageSpec, cache_dir: Path) -> dict[str, str] | None:
    digests: dict[str, str] = {}
    for layer in spec.layers:
        digest = cached_digest(layer.source, cache_dir=cache_dir)
        if digest is None:
            return None
        digests[layer.name] = digest
    return digests


async def _prepare_layers(
    spec: ImageSpec, work: Path, cancel: threading.Event, report: Reporter,
    layers: LayerCache | None, digests: Sequence[asyncio.Future[str]],
    ram_limit: int | None = None,
) -> list[LayerTree]:
    """Extract tar layers (two at a time) and scan directory layers, all charged to one
    budget: the disk's size (compositor.budget), and ``ram_limit`` when work is in RAM. With a
    layer cache, a tar layer whose digest is known and cached is reused, and one extracted is
    stored there (by digests[i])."""
    count = len(spec.layers)
    budget = SpaceBudget.for_disk(spec.filesystem, spec.size_gib)
    budget.ram_limit = ram_limit
    budget.watch_host(work)
    slots = asyncio.Semaphore(max(1, min(2, os.cpu_count() or 1)))
    done = 0

    async def prepare(index: int, layer: LayerSource) -> LayerTree:
        nonlocal done
        async with slots:
            report.stage(f"extracting layer {index + 1}/{count} ({layer.name})",
                         0.05 + 0.4 * done / count)
            if Path(layer.source).is_dir():
                tree = await in_thread(cancel, scan_dir_layer, layer, cancel, budget)
            elif layers is None:
                dest = work / "layers" / str(index)
                dest.mkdir(parents=True)
                tree = await in_thread(cancel, extract_tar_layer, layer, dest, cancel, None,
                                       budget)
            else:
                tree = await _cached_tar_layer(layer, layers, digests[index], cancel, budget)
            done += 1
            return tree

    tasks = [asyncio.ensure_future(prepare(i, layer)) for i, layer in enumerate(spec.layers)]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        cancel.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _cached_tar_layer(
    layer: LayerSource, layers: LayerCache, digest: asyncio.Future[str],
    cancel: threading.Event, budget: SpaceBudget,
) -> LayerTree:
    """The layer's cached tree (held), else the layer extracted into the cache. A digest not
    known yet (a new or changed layer) is not waited for: it is stored once extracted."""
    if digest.done() and not digest.cancelled() and digest.exception() is None:
        known: str | None = digest.result()
    else:
        known = await in_thread(cancel, functools.partial(
            cached_digest, layer.source, cache_dir=layers.cache.root))
    if known is not None:
        tree = await in_thread(cancel, layers.open, known, layer, budget)
        if tree is not None:
            return tree
    temp = await in_thread(cancel, layers.new_extraction)
    tree = await in_thread(cancel, extract_tar_layer, layer, temp / TREE, cancel, None, budget)
    try:
        return await in_thread(cancel, layers.store, await digest, temp, tree)
    except BrokenEntry:  # not stored (e.g. the table disagrees with the files): used uncached
        return tree


async def _build_raw(
    spec: ImageSpec, trees: list[LayerTree], work: Path, raw: Path, seed: str,
    cancel: threading.Event, report: Reporter,
) -> None:
    identity = DiskIdentity(seed, await in_thread(cancel, build_epoch, trees))
    publish_dir = work / "publish"
    publish_dir.mkdir()
    trees.append(await in_thread(cancel, write_publish_layer, spec, publish_dir, identity.epoch))
    report.stage("merging layers", 0.45)
    staging = work / "root"
    staging.mkdir()
    merger = Merger(staging, cancel)
    for tree in trees:
        await in_thread(cancel, merger.apply, tree)
    report.stage("checking the merged tree", 0.5)
    builder = FILESYSTEM_BUILDERS[spec.filesystem]
    await builder(staging, merger.meta, raw, work, spec.size_gib, identity, cancel, report)


def _hold_cached(path: Path) -> ArtifactHold | None:
    try:
        return hold_artifact(path)
    except FileNotFoundError:
        return None


def _remove_all(paths: list[Path]) -> None:
    for child in paths:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


async def _cleanup(work: Path, temps: list[Path], layers: LayerCache | None) -> None:
    def remove() -> None:
        for tmp in temps:
            Cache.discard(tmp)
        if layers is not None:
            layers.close()
        shutil.rmtree(work, ignore_errors=True)

    task = asyncio.ensure_future(asyncio.to_thread(remove))
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            continue
