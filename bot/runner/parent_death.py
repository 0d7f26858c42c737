"""A helper process that ends with the process that started it.

A child of a ``ProcessPoolExecutor`` waits on its call queue for work; when its parent is
killed (SIGKILL, out of memory) nothing tells it, and it would wait for ever, re-parented.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, poll: float = 1.0) -> None:
    """Call first thing in the child: it gets SIGTERM when ``parent`` dies (Linux), or exits
    within ``poll`` seconds of it (elsewhere). Linux sends the signal when the *thread* that
    started the child ends: a pool started from serve's event loop thread lives as long as serve."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
    else:
        threading.Thread(target=_exit_when_orphaned, args=(parent, poll), daemon=True,
                         name="parent-watch").start()
    if os.getppid() != parent:  # the parent died before the signal was asked for
        os._exit(1)


def _exit_when_orphaned(parent: int, poll: float) -> None:
    while os.getppid() == parent:
        time.sleep(poll)
    os._exit(1)
