"""Benchmark: a fixed VHD into a page blob on Azurite, ours vs the SDK's whole-file upload.

    .venv/bin/python bench/azure_upload.py                  # 4 GiB VHD, 400 MiB of data
    .venv/bin/python bench/azure_upload.py --size-gib 1 --data-mib 64   # quick smoke run

(a) naive: one sequential ``BlobClient.upload_blob(file, blob_type=PageBlob)`` of the whole
    VHD (the SDK reads all of it and skips only 4 MiB chunks that are entirely zero);
(b) ours: ``adapters.azure_blob.pages.upload_pages``: only the non-zero 512-byte pages, found
    through SEEK_DATA/SEEK_HOLE and a scan of the data extents, CONCURRENCY (32) requests of <= 4 MiB at once.

The data is spread like files on a fresh file system: runs of 64 KiB to 2 MiB at unaligned
offsets, holes between them, some zero pages inside. Both runs go to one Azurite started for
the benchmark. Prints both ratios measured in the same run: bytes sent / data the bench wrote (target
<= 1.05; counted on the wire by a proxy in a third upload) and the speed-up (target >= 5x;
both timed straight to Azurite).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MIB = 2**20


def make_vhd(work: Path, size_gib: int, data_mib: int, seed: int = 10) -> tuple[Path, int]:
    """A fixed VHD of ``size_gib`` holding about ``data_mib`` of data; the bytes in the pages
    the bench wrote that are not zero, counted by reading those regions back page by page
    (not by the upload's own SEEK_DATA scan), plus the VHD's footer."""
    from compositor.convert import convert
    from compositor.identity import KeyIdentity

    rng = random.Random(seed)
    raw = work / "disk.raw"
    size = size_gib * 2**30
    regions: list[tuple[int, int]] = []
    with open(raw, "wb") as f:
        f.truncate(size)
        written = 0
        while written < data_mib * MIB:
            length = rng.choice((64, 128, 256, 512, 1024, 2048)) * 1024
            offset = rng.randrange(MIB, size - length) // 512 * 512 + rng.choice((0, 100))
            block = bytearray(os.urandom(length))
            for _ in range(length // (64 * 1024)):  # a few zero pages inside the data
                hole = rng.randrange(0, length - 512) // 512 * 512
                block[hole:hole + 512] = bytes(512)
            f.seek(offset)
            f.write(block)
            regions.append((offset, offset + length))
            written += length
    data = _written_nonzero_bytes(raw, regions) + 512  # the footer, never zero
    vhd = work / "disk.vhd"
    asyncio.run(convert(raw, "vhd", vhd, lambda _: None, KeyIdentity(seed="bench")))
    raw.unlink()
    return vhd, data


def _written_nonzero_bytes(raw: Path, regions: list[tuple[int, int]]) -> int:
    """Bytes of the 512-byte pages touched by ``regions`` that hold a non-zero byte, each page
    counted once (regions may overlap)."""
    pages = {page for start, end in regions for page in range(start // 512, -(-end // 512))}
    zero = bytes(512)
    with open(raw, "rb") as f:
        return 512 * sum(1 for page in pages if os.pread(f.fileno(), 512, page * 512) != zero)


def naive(sas_url: str, vhd: Path) -> float:
    from azure.storage.blob import BlobClient, BlobType

    start = time.perf_counter()
    with BlobClient.from_blob_url(sas_url) as blob, open(vhd, "rb") as f:
        blob.upload_blob(f, blob_type=BlobType.PAGEBLOB, length=vhd.stat().st_size,
                         overwrite=True, max_concurrency=1)
    return time.perf_counter() - start


async def ours(sas_url: str, vhd: Path, concurrency: int, max_request: int
               ) -> tuple[float, float, int]:
    """Seconds, CPU seconds of this process (the client's share) and requests sent."""
    from adapters.azure_blob.pages import upload_pages

    start, cpu = time.perf_counter(), time.process_time()
    stats = await upload_pages(sas_url, vhd, concurrency=concurrency, max_request=max_request)
    return time.perf_counter() - start, time.process_time() - cpu, stats.requests


async def run(vhd: Path, data: int, work: Path, concurrency: int, max_request: int) -> None:
    from tests.azure.azurite import page_blob_sas, start_azurite
    from tests.azure.storage_proxy import StorageProxy

    peer = start_azurite(work / "azurite")
    proxy = StorageProxy(peer.endpoint)
    await proxy.start()
    size = vhd.stat().st_size
    try:
        # timed straight to Azurite (a Python proxy would slow the faster run the most)
        naive_s = await asyncio.to_thread(
            naive, page_blob_sas(peer, "bench", "naive.vhd", size), vhd)
        ours_url = page_blob_sas(peer, "bench", "ours.vhd", size)
        ours_s, ours_cpu, requests = await ours(ours_url, vhd, concurrency, max_request)
        # bytes on the wire, counted by the proxy, in a second upload of ours
        await ours(proxy.url(page_blob_sas(peer, "bench", "counted.vhd", size)), vhd, concurrency,
                   max_request)
        sent = proxy.sent_bytes
        from adapters.azure_blob.nonzero import total
        from tests.azure.test_pages import azurite_ranges

        held = total(azurite_ranges(ours_url))
        naive_held = total(azurite_ranges(page_blob_url(peer, "bench", "naive.vhd")))
    finally:
        await proxy.stop()
        peer.stop()
    print(f"{'run':<44}{'seconds':>9}{'MiB stored':>12}")
    print(f"{'naive: upload_blob(PageBlob), sequential':<44}{naive_s:>9.1f}{naive_held / MIB:>12.0f}")
    label = f"ours: non-zero pages, {concurrency} x <= {max_request / MIB:g} MiB"
    print(f"{label:<44}{ours_s:>9.1f}{held / MIB:>12.0f}")
    print(f"ours: {requests} Put Page requests of {held / requests / 1024:.0f} KiB on average; "
          f"{ours_cpu:.1f} CPU s in this process")
    print(f"bytes sent / data written: {sent / MIB:.1f} MiB / {data / MIB:.1f} MiB = "
          f"{sent / data:.3f} (target <= 1.05); stored / data written: {held / data:.3f}")
    print(f"speed-up: {naive_s / ours_s:.1f}x (target >= 5x)")


def page_blob_url(peer: Any, container: str, blob: str) -> str:
    """A read SAS URL to an existing blob."""
    import datetime

    from azure.storage.blob import BlobSasPermissions, generate_blob_sas

    from tests.azure.azurite import ACCOUNT, KEY

    expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    sas = generate_blob_sas(ACCOUNT, container, blob, account_key=KEY,
                            permission=BlobSasPermissions(read=True), expiry=expiry)
    return f"{peer.account_url}/{container}/{blob}?{sas}"


def main() -> None:
    from adapters.azure_blob.pages import CONCURRENCY

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gib", type=int, default=4)
    parser.add_argument("--data-mib", type=int, default=400)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY,
                        help="requests at once (ours; the adapters' default)")
    parser.add_argument("--request-mib", type=float, default=4, help="largest request (ours)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        vhd, data = make_vhd(work, args.size_gib, args.data_mib)
        print(f"VHD: {vhd.stat().st_size / 2**30:.2f} GiB, {data / MIB:.0f} MiB in non-zero "
              f"pages; cores: {os.cpu_count()}; load average {os.getloadavg()[0]:.2f}")
        asyncio.run(run(vhd, data, work, args.concurrency, int(args.request_mib * MIB)))
        print(f"load average after: {os.getloadavg()[0]:.2f} (other work on the machine skews "
              "the times)")


if __name__ == "__main__":
    main()
