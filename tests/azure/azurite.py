"""Azurite (Microsoft's storage emulator, installed by scripts/setup.sh from npm) as a local
peer: started on a random loopback port with a throw-away folder, and the well-known
development account, whose key is public."""

from __future__ import annotations

import datetime
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AZURITE_BLOB = ROOT / ".tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
#: Azurite's documented development key (public, not a secret)
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_LISTENING = re.compile(r"listens on (http://127\.0\.0\.1:\d+)")


class AzuriteUnavailable(RuntimeError):
    pass


@dataclass
class Azurite:
    process: subprocess.Popen[bytes]
    #: http://127.0.0.1:<port>
    endpoint: str

    @property
    def account_url(self) -> str:
        return f"{self.endpoint}/{ACCOUNT}"

    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
                f"BlobEndpoint={self.account_url};")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_azurite(location: Path, timeout: float = 60.0) -> Azurite:
    """azurite-blob on 127.0.0.1, port chosen by the system (it prints the one it got)."""
    if not AZURITE_BLOB.exists():
        raise AzuriteUnavailable(f"{AZURITE_BLOB} is missing: run scripts/setup.sh "
                                 "(it installs Azurite from npm)")
    location.mkdir(parents=True, exist_ok=True)
    log = location / "azurite.log"  # a file, not a pipe: nothing has to keep reading it
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(AZURITE_BLOB), "--blobHost", "127.0.0.1", "--blobPort", "0", "--location",
             str(location), "--skipApiVersionCheck", "--loose", "--disableTelemetry", "--silent"],
            stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if found := _LISTENING.search(log.read_text(errors="replace")):
            return Azurite(process, found.group(1))
        time.sleep(0.1)
    process.kill()
    process.wait()
    raise AzuriteUnavailable(f"azurite-blob did not start within {timeout:.0f} s: "
                             f"{log.read_text(errors='replace')[-2000:]}")


def page_blob_sas(azurite: Azurite, container: str, blob: str, size: int, *,
                  key: str = KEY, expires_in: float = 3600.0) -> str:
    """Create an empty page blob of ``size`` bytes (as Azure does for an upload disk) and return
    a read/write SAS URL to it, signed with ``key``, expiring in ``expires_in`` seconds."""
    from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas

    with BlobServiceClient.from_connection_string(azurite.connection_string()) as service:
        containers = service.get_container_client(container)
        if not containers.exists():
            containers.create_container()
        containers.get_blob_client(blob).create_page_blob(size)
    expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=expires_in)
    sas = generate_blob_sas(ACCOUNT, container, blob, account_key=key,
                            permission=BlobSasPermissions(read=True, write=True), expiry=expiry)
    return f"{azurite.account_url}/{container}/{blob}?{sas}"
