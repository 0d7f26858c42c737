"""Layers → merged tree → partitioned disk → platform format. Knows nothing of Slack or platforms.

Public API:
    build_image(spec, work_dir=, cache_dir=, progress=) -> BuiltImage   (async)
    isolated.build_image_isolated(...)   # the same, in a child process (keeps the GIL free)
    cache_lookup(spec, cache_dir=) -> BuiltImage | None
    digests_known(layers, cache_dir=) -> bool   # else cache_lookup finds nothing
    layer_digest(source, cache_dir=) -> str
    required_tools(formats, filesystems=("ext4",)) -> list[ToolStatus]
    set_tool_niceness(n)   # run external tools at lower priority (a service's event loop first)
    sweep_stale(work_dir, cache_dir) -> list[Path]   # leftovers of killed builds, removed
    evict_cache(cache_dir, max_bytes, keep=) -> Eviction   # least recently used entries go
    cache_usage(cache_dir) -> CacheUsage
    hold_artifact(path) -> ArtifactHold   # eviction leaves a held artifact alone
    CompositorError, LayerError, DiskTooSmallError, HostSpaceError, ToolMissingError,
    ToolFailedError
"""

from .build import build_image, cache_lookup, digests_known
from .digest import layer_digest
from .errors import (
    CompositorError,
    DiskTooSmallError,
    HostSpaceError,
    LayerError,
    ToolFailedError,
    ToolMissingError,
)
from .evict import ArtifactHold, CacheUsage, Eviction, cache_usage, hold_artifact
from .evict import evict as evict_cache
from .spec import (
    FORMAT_EXTENSIONS,
    BuiltImage,
    ExtraFile,
    ImageSpec,
    LayerSource,
    ProgressCallback,
)
from .sweep import sweep_stale
from .tool_runner import set_tool_niceness
from .tools import ToolStatus, required_tools

__all__ = [
    "FORMAT_EXTENSIONS",
    "ArtifactHold",
    "BuiltImage",
    "CacheUsage",
    "CompositorError",
    "DiskTooSmallError",
    "Eviction",
    "ExtraFile",
    "HostSpaceError",
    "ImageSpec",
    "LayerError",
    "LayerSource",
    "ProgressCallback",
    "ToolFailedError",
    "ToolMissingError",
    "ToolStatus",
    "build_image",
    "cache_lookup",
    "cache_usage",
    "digests_known",
    "evict_cache",
    "hold_artifact",
    "layer_digest",
    "required_tools",
    "set_tool_niceness",
    "sweep_stale",
]
