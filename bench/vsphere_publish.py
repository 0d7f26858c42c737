"""Benchmark: publish a raw disk to vcsim, naive "convert then upload" vs streaming writer.

    .venv/bin/python bench/vsphere_publish.py                 # 4 GiB disk, ~1 GiB of data
    .venv/bin/python bench/vsphere_publish.py --data-mib 64   # quick smoke run

(a) naive: ``qemu-img convert -O vmdk -o subformat=streamOptimized`` to a file, then the
    same OVF import uploading that file; (b) ours: the adapter's publish, converting on all
    cores while streaming into the NFC lease, with zlib level 6 (as qemu-img), zlib level 1
    and ``compressor: auto`` (ISA-L when the ``isal`` package is installed). Each run is a
    child process, so peak RSS (VmHWM of the child; qemu-img's from wait4) is per run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MIB = 2**20


def _system_files(limit: int) -> Any:
    """Bytes of real files (binaries, libraries, docs) as a composited OS layer would hold."""
    total = 0
    for root in ("/usr/lib/x86_64-linux-gnu", "/usr/bin", "/usr/share", "/usr/lib"):
        for top, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                if total >= limit:
                    return
                path = Path(top, name)
                try:
                    if path.is_symlink() or not path.is_file():
                        continue
                    data = path.read_bytes()[: limit - total]
                except OSError:
                    continue
                total += len(data)
                yield data


def make_disk(path: Path, size_gib: int, data_mib: int) -> int:
    """Sparse GPT disk holding ``data_mib`` of real files from /usr in 8 MiB runs.

    The runs are spread over the disk with holes between them, like files in a freshly
    made filesystem; synthetic text plus random bytes fill in if /usr is too small.
    """
    with open(path, "wb") as f:
        f.truncate(size_gib * 2**30)
    subprocess.run(["sgdisk", "-n1:2048:+256M", "-t1:ef00", "-n2:0:0", "-t2:8304", str(path)],
                   check=True, capture_output=True)
    chunks = max(1, data_mib // 8)
    stride = ((size_gib * 2**30 - 300 * MIB) // chunks) // MIB * MIB
    buf = bytearray()
    source = _system_files(chunks * 8 * MIB)
    with open(path, "r+b") as f:
        for n in range(chunks):
            while len(buf) < 8 * MIB:
                piece = next(source, None)
                if piece is None:
                    line = f"{n:07d} synthetic layer data {os.urandom(8).hex()}\n".encode()
                    piece = line * 40_000 + os.urandom(2 * MIB)
                buf += piece
            f.seek(258 * MIB + n * stride)
            f.write(buf[: 8 * MIB])
            del buf[: 8 * MIB]
    return chunks * 8 * MIB


class FileVmdk:
    """Stands in for StreamVmdk in the naive run: streams an already converted file."""

    def __init__(self, raw: Path, **_: Any) -> None:
        self.path = Path(os.environ["BENCH_VMDK"])
        self.size = self.path.stat().st_size
        self.written = 0

    @property
    def fraction(self) -> float:
        return self.written / self.size if self.size else 1.0

    def __iter__(self) -> Any:
        with open(self.path, "rb") as f:
            while chunk := f.read(4 * MIB):
                self.written += len(chunk)
                yield chunk


def child(mode: str, disk: Path, url: str, level: int, engine: str,
          work: Path) -> dict[str, Any]:
    from urllib.parse import urlsplit

    import adapters.vsphere.upload as upload
    from adapters.base import PublishContext
    from adapters.base import publish as publish_steps
    from adapters.vsphere import Adapter, Config
    from tests.vsphere.simulator import PASSWORD, PASSWORD_ENV, USER, USER_ENV

    os.environ[USER_ENV], os.environ[PASSWORD_ENV] = USER, PASSWORD
    parts = urlsplit(url)
    cfg = Config(type="vsphere", host=parts.hostname or "", port=parts.port or 443,
                 user_env=USER_ENV, password_env=PASSWORD_ENV, insecure=True, datacenter="DC0",
                 cluster="DC0_C0", datastore="LocalDS_0", network="VM Network",
                 compression_level=level, compressor=engine)
    result: dict[str, Any] = {"mode": mode, "level": level}
    start = time.perf_counter()
    if mode == "naive":
        vmdk = work / "naive.vmdk"
        qemu = subprocess.Popen(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o",
                                 "subformat=streamOptimized,adapter_type=lsilogic", str(disk),
                                 str(vmdk)])
        _, status, usage = os.wait4(qemu.pid, 0)
        qemu.returncode = os.waitstatus_to_exitcode(status)
        if qemu.returncode:
            raise SystemExit(f"qemu-img failed with {qemu.returncode}")
        result["qemu_rss_mib"] = usage.ru_maxrss / 1024
        result["convert_s"] = time.perf_counter() - start
        os.environ["BENCH_VMDK"] = str(vmdk)
        upload.StreamVmdk = FileVmdk  # type: ignore[assignment,misc]
    else:
        streams: list[Any] = []
        real = upload.StreamVmdk

        def counting(*a: Any, **kw: Any) -> Any:
            streams.append(real(*a, **kw))
            return streams[-1]

        upload.StreamVmdk = counting  # type: ignore[assignment,misc]

    async def publish() -> None:
        adapter = Adapter(cfg)

        async def progress(fraction: float, note: str) -> None:
            return None

        name = f"bench-{mode}-{level}-{time.time_ns()}"
        ctx = PublishContext(task_id="bench", template="bench", image_name=name,
                             artifact=disk, artifact_format="raw",
                             virtual_size=disk.stat().st_size, progress=progress)
        try:
            await publish_steps(adapter, ctx)
        finally:
            await adapter.close()

    asyncio.run(publish())
    result["total_s"] = time.perf_counter() - start
    result["rss_mib"] = _peak_rss_kib() / 1024
    if mode == "naive":
        result["vmdk_mib"] = (work / "naive.vmdk").stat().st_size / MIB
        (work / "naive.vmdk").unlink()
    else:
        result["vmdk_mib"] = streams[-1].written / MIB
        result["engine"] = streams[-1].engine
    return result


def _peak_rss_kib() -> int:
    """VmHWM of this process (ru_maxrss would include the parent's pages before exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_child(mode: str, disk: Path, url: str, level: int, engine: str,
              work: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--disk", str(disk),
                          "--url", url, "--level", str(level), "--engine", engine,
                          "--workdir", str(work)],
                         check=False, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{mode} run failed:\n{out.stderr}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gib", type=int, default=4)
    parser.add_argument("--data-mib", type=int, default=1024)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--child", choices=["naive", "ours"])
    parser.add_argument("--disk", type=Path)
    parser.add_argument("--url")
    parser.add_argument("--level", type=int, default=1)
    parser.add_argument("--engine", default="zlib", choices=["zlib", "auto"])
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each case N times and keep the fastest (shared machines)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.disk, args.url, args.level, args.engine,
                               args.workdir)))
        return

    from tests.vsphere.simulator import build_vcsim, start_vcsim

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        disk = work / "disk.img"
        data = make_disk(disk, args.size_gib, args.data_mib)
        print(f"disk: {args.size_gib} GiB, {data / MIB:.0f} MiB of data; cores: {os.cpu_count()}")
        sim = start_vcsim(build_vcsim())
        load = os.getloadavg()[0]
        try:
            cases = [("naive", 6, "zlib"), ("ours", 6, "zlib"), ("ours", 1, "zlib"),
                     ("ours", 1, "auto")]
            runs = [min((run_child(mode, disk, sim.url, level, engine, work)
                         for _ in range(args.repeat)), key=lambda r: r["total_s"])
                    for mode, level, engine in cases]
        finally:
            sim.stop()
        print(f"load average before/after: {load:.2f} / {os.getloadavg()[0]:.2f} "
              f"(other work on the machine skews the times)")
    naive = runs[0]["total_s"]
    print(f"{'run':<26}{'total s':>9}{'ratio':>8}{'peak RSS MiB':>14}  notes")
    for r in runs:
        name = ("naive: qemu-img + upload" if r["mode"] == "naive"
                else f"ours: stream, {r['engine']} {r['level']}")
        rss = r["rss_mib"]
        notes = (f"convert {r['convert_s']:.1f} s, VMDK {r['vmdk_mib']:.0f} MiB, "
                 f"qemu-img peak RSS {r['qemu_rss_mib']:.0f} MiB" if r["mode"] == "naive"
                 else f"VMDK {r['vmdk_mib']:.0f} MiB streamed")
        print(f"{name:<26}{r['total_s']:>9.1f}{naive / r['total_s']:>7.1f}x{rss:>14.0f}  {notes}")


if __name__ == "__main__":
    main()
