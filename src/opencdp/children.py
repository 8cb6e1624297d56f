"""Child processes that end with the process that started them.

A parent killed outright (SIGKILL, out of memory) never closes its executors, and a pool
worker waiting for its next job would wait forever. Pools pass ``exit_with_parent`` as
their ``initializer``.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading


def exit_with_parent(poll_s: float = 1.0) -> None:
    """Run in each worker as it starts: end it as soon as the process that started it is gone.

    A parent killed outright (SIGKILL, out of memory) never reaches ``Pool.close``, and a worker
    waiting for its next slice would wait forever: it holds both ends of the executor's queue.
    The parent's sentinel (a pipe whose other end only the parent holds) reads EOF when it dies;
    a changed parent pid covers a pipe end some other child of the parent inherited.
    """
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return
    sentinel, parent_pid = parent.sentinel, os.getppid()

    def watch() -> None:
        while not multiprocessing.connection.wait([sentinel], timeout=poll_s) and os.getppid() == parent_pid:
            pass
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
