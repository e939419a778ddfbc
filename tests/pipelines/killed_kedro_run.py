"""``kedro run`` that SIGKILLs itself at a chosen save: fault injection for test_fault_injection.

    CGD_KILL_AT=<part of a file path> CGD_KILL_MODE=mid-save|after-save
        python killed_kedro_run.py run ...

``mid-save``: the file is written to its temporary name, cut to half its size, then the process
is killed (as a kill or a full disk during a large save would leave it). ``after-save``: killed
right after the file was renamed into place, i.e. between two nodes' saves.
"""

import os
import signal
import sys

from kedro.framework.cli import main

from cgd_kedro.datasets import atomic

KILL_AT, MODE = os.environ["CGD_KILL_AT"], os.environ.get("CGD_KILL_MODE", "mid-save")
_atomic_write = atomic.atomic_write


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def atomic_write_then_kill(path, write):
    if KILL_AT not in str(path):
        return _atomic_write(path, write)
    if MODE == "mid-save":

        def write_half(temporary):
            write(temporary)
            os.truncate(temporary, temporary.stat().st_size // 2)
            _kill()

        return _atomic_write(path, write_half)
    _atomic_write(path, write)
    _kill()


atomic.atomic_write = atomic_write_then_kill

if __name__ == "__main__":
    sys.exit(main())
