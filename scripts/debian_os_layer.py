#!/usr/bin/env python3
"""Build a minimal bootable Debian OS layer (a .tar.zst) with debootstrap.

    sudo python3 scripts/debian_os_layer.py OUT.tar.zst [--mirror URL] [--suite NAME]

minbase plus systemd, udev and Debian's cloud kernel (virtio built for VMs), with an initrd
made by initramfs-tools; documentation, man pages, locales and apt caches are left out. The
mirror and suite default to $LAYERBOT_DEBIAN_MIRROR / $LAYERBOT_DEBIAN_SUITE, else to the
first Debian entry of this machine's apt sources. Needs root (debootstrap), about a minute
and 100 MB. Used by the QEMU proof test and scripts/demo-qemu.sh.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGES = "systemd-sysv,udev,linux-image-cloud-amd64"
_DROP = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
         "var/cache/apt/archives", "var/lib/apt/lists")


def apt_sources() -> list[tuple[str, str]]:
    """(URI, suite) pairs of this machine's apt sources, one-line and deb822 formats."""
    found: list[tuple[str, str]] = []
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
                if "deb" in fields.get("Types", "").split():
                    for uri in fields.get("URIs", "").split():
                        found += [(uri, s) for s in fields.get("Suites", "").split()]
        elif path.suffix == ".list":
            for line in text.splitlines():
                m = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m:
                    found.append((m.group(1), m.group(2)))
    return found


def default_mirror() -> tuple[str, str]:
    for uri, suite in apt_sources():
        if uri.rstrip("/").endswith("/debian") and "-" not in suite and "/" not in suite:
            return uri, suite
    raise SystemExit("no Debian mirror in /etc/apt/sources*; set LAYERBOT_DEBIAN_MIRROR "
                     "and LAYERBOT_DEBIAN_SUITE")


def build(out: Path, mirror: str, suite: str) -> None:
    if os.geteuid() != 0:
        raise SystemExit("debootstrap needs root: run this as root or with sudo")
    for tool in ("debootstrap", "zstd", "tar"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (scripts/setup.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="layerbot-debian-", dir=out.parent) as tmp:
        root = Path(tmp) / "root"
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={PACKAGES}", suite,
                        str(root), mirror], check=True, stdout=subprocess.DEVNULL)
        for rel in _DROP:
            shutil.rmtree(root / rel, ignore_errors=True)
            (root / rel).mkdir(parents=True, exist_ok=True)
        (root / "etc/hostname").write_text("layerbot-guest\n")
        (root / "etc/fstab").write_text("# root is given on the kernel command line\n")
        partial = out.with_name(out.name + ".partial")
        with open(partial, "wb") as dest:
            tar = subprocess.Popen(
                ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "--exclude=./dev/*",
                 "--exclude=./proc/*", "--exclude=./sys/*", "--exclude=./run/*", "-cf", "-", "."],
                stdout=subprocess.PIPE)
            subprocess.run(["zstd", "-q", "-T0", "-3", "-c"], stdin=tar.stdout, stdout=dest,
                           check=True)
            assert tar.stdout is not None
            tar.stdout.close()
            if tar.wait() != 0:
                raise SystemExit("tar failed")
        os.replace(partial, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("out", type=Path)
    parser.add_argument("--mirror", default=os.environ.get("LAYERBOT_DEBIAN_MIRROR"))
    parser.add_argument("--suite", default=os.environ.get("LAYERBOT_DEBIAN_SUITE"))
    args = parser.parse_args()
    mirror, suite = args.mirror, args.suite
    if not mirror or not suite:
        found_mirror, found_suite = default_mirror()
        mirror, suite = mirror or found_mirror, suite or found_suite
    args.out.parent.mkdir(parents=True, exist_ok=True)
    build(args.out.resolve(), mirror, suite)
    print(f"{args.out}: Debian {suite} OS layer from {mirror}", file=sys.stderr)


if __name__ == "__main__":
    main()
