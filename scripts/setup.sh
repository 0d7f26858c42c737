#!/usr/bin/env bash
# Installs everything layerbot and its tests need: Debian packages (apt-get, as root
# or through sudo) and a virtualenv in .venv with layerbot, every platform SDK
# (the [all] extra) and its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  qemu-utils          # qemu-img: disk formats
  e2fsprogs           # mke2fs -d, debugfs, e2fsck
  fakeroot            # ownership of layer files without root
  gdisk               # sgdisk: GPT
  zstd                # .tar.zst layers
  wimtools ntfs-3g libhivex-bin faketime  # Windows guests: NTFS, WIM apply, registry hives
  qemu-system-x86     # the local QEMU target
  debootstrap         # tests: a real minimal Debian OS layer
  golang-go golang-github-vmware-govmomi-dev   # tests: vcsim, VMware's vCenter simulator
  nodejs npm          # tests: Azurite, Microsoft's Azure Storage emulator (from npm, below)
  samba               # tests: smbd, the SMB share the Hyper-V/PVS disk copy goes to
  libkrb5-dev gcc python3-dev  # [hyperv]: gssapi and krb5 (Kerberos) are built from source
  postgresql          # tests: a throw-away PostgreSQL cluster for the shared task store
  systemd             # tests: systemd-analyze verify of deploy/systemd's units
  python3-venv
)
# commands another source may provide (NodeSource's nodejs bundles npm, and conflicts with
# Debian's npm package): the package is installed only when the command is missing
declare -A COMMAND_OF=([nodejs]=node [npm]=npm)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  if [ -n "${COMMAND_OF[$pkg]:-}" ] && command -v "${COMMAND_OF[$pkg]}" >/dev/null; then
    continue
  fi
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[all,test]'

# Azurite (tests/azure): the exact version and dependency tree of tools/azurite's lockfile,
# installed with `npm ci` into the git-ignored .tools/azurite (no global install, no install
# scripts); reinstalled only when the lockfile changes
AZURITE_SRC=tools/azurite
AZURITE_DIR=.tools/azurite
if ! cmp -s "$AZURITE_SRC/package-lock.json" "$AZURITE_DIR/package-lock.json" \
    || [ ! -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ]; then
  rm -rf "$AZURITE_DIR"
  mkdir -p "$AZURITE_DIR"
  cp "$AZURITE_SRC/package.json" "$AZURITE_SRC/package-lock.json" "$AZURITE_DIR/"
  npm ci --prefix "$AZURITE_DIR" --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
fi
