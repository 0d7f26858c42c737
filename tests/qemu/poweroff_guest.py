"""The smallest guest that powers itself off: a Linux boot-protocol "kernel" whose real-mode
setup code prints one line on the serial console and asks the chipset for S5.

QEMU's direct kernel boot (``-kernel``) loads the setup code of a bzImage at 0x90000 and jumps
to it in real mode, after SeaBIOS has set the q35 chipset's ACPI PM base to 0x600. Writing
SLP_EN with sleep type 0 (S5 in QEMU's DSDT) to PM1a_CNT (0x604) is what an OS does last when it
powers off: QEMU reports a ``SHUTDOWN`` event with ``guest: true, reason: guest-shutdown``, so
the monitor (adapters.qemu.monitor) records ``off`` exactly as for a guest whose first-boot
runner finished. Under TCG it boots and powers off in well under a second, where the Debian
layer takes minutes."""

from __future__ import annotations

#: what the guest prints on ttyS0 before powering off
BANNER = b"layerbot test guest: powering off\r\n"
#: file offset of the setup code QEMU jumps to (setup segment + 0x20, offset 0)
_SETUP_ENTRY = 0x200
#: where the code starts, after the boot protocol header's first fields
_CODE = 0x80
_SIZE = 8192  # the (zero) setup sectors QEMU reads, and some "protected-mode kernel" after them


def _code(message_offset: int) -> bytes:
    """Real-mode code at ``_SETUP_ENTRY + _CODE``; ``message_offset`` is relative to CS."""
    return bytes([
        0x8C, 0xC8,                                  # mov ax, cs
        0x8E, 0xD8,                                  # mov ds, ax
        0xBE, *message_offset.to_bytes(2, "little"),  # mov si, message
        0xBA, 0xF8, 0x03,                            # mov dx, 0x3f8 (COM1)
        0xAC,                                        # next: lodsb
        0x84, 0xC0,                                  # test al, al
        0x74, 0x03,                                  # jz poweroff
        0xEE,                                        # out dx, al
        0xEB, 0xF8,                                  # jmp next
        0xBA, 0x04, 0x06,                            # poweroff: mov dx, 0x604 (PM1a_CNT)
        0xB8, 0x00, 0x20,                            # mov ax, 0x2000 (SLP_EN, SLP_TYP 0: S5)
        0xEF,                                        # out dx, ax
        0xFA,                                        # cli
        0xF4,                                        # halt: hlt
        0xEB, 0xFD,                                  # jmp halt
    ])


def kernel_image() -> bytes:
    """The guest as a kernel file for ``/boot/vmlinuz-*``."""
    image = bytearray(_SIZE)
    image[_SETUP_ENTRY:_SETUP_ENTRY + 2] = bytes([0xEB, _CODE - 2])  # jmp short over the header
    code = _code(_CODE + len(_code(0)))
    start = _SETUP_ENTRY + _CODE
    image[start:start + len(code)] = code
    image[start + len(code):start + len(code) + len(BANNER) + 1] = BANNER + b"\0"
    return bytes(image)


def os_layer_members() -> dict[str, bytes | None]:
    """An OS layer (tests.conftest.write_tar members) that boots into this guest. Its systemd
    never runs (the guest powers off first); the compositor needs one to install the first-boot
    runner, as for a real Linux layer."""
    return {"usr/": None, "usr/lib/": None, "usr/lib/systemd/": None,
            "usr/lib/systemd/systemd": b"\x7fELF",
            "boot/": None, "boot/vmlinuz-6.1.0-poweroff": kernel_image(),
            "etc/": None, "etc/hostname": b"guest\n", "etc/os-release": b"ID=poweroff\n"}

