"""Keep one CPU core busy with another process while a benchmark runs.

A lab PC runs PsychoPy, CI runs other jobs, a shared server has other users: the speed
that matters is the speed with a core taken. ``busy_core()`` starts one spinning Python
process for the duration of a ``with`` block and always ends it::

    from busy import busy_core

    with busy_core():
        ...  # timed code: one core is held by another process

The spinner is bounded three ways, so it never outlives the benchmark: it is terminated
(then killed) when the block ends, even on an exception or Ctrl-C; it stops by itself
after ``seconds``; and it stops when its parent process is gone (checked every few
milliseconds), e.g. after ``kill -9`` of the benchmark.

Run alone, ``python benchmarks/busy.py`` checks that the spinner takes a core (its CPU
time over a second of wall time) and is gone afterwards.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

__all__ = ["busy_core"]

# The spinner: says it is ready, then burns CPU until its deadline or until its parent
# is gone (re-parented processes see another parent id).
_SPIN = """\
import os, sys, time
parent, deadline = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
sys.stdout.write("spinning\\n"); sys.stdout.flush()
x = 0
while True:
    for _ in range(20000):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    if os.getppid() != parent or time.monotonic() > deadline:
        break
"""


@contextlib.contextmanager
def busy_core(seconds=300.0):
    """Keep one core busy with another process inside the ``with`` block.

    Parameters
    ----------
    seconds : float
        Upper bound on the spinner's life in seconds (it also ends with the block and
        with this process). Must be > 0.

    Yields
    ------
    subprocess.Popen
        The spinning process (already spinning when the block starts).
    """
    seconds = float(seconds)
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds!r}")
    proc = subprocess.Popen([sys.executable, "-c", _SPIN, str(os.getpid()), str(seconds)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()           # blocks until the spinner runs
        if line.strip() != "spinning":
            raise RuntimeError(f"the busy-core process did not start (exit {proc.poll()})")
        time.sleep(0.05)                         # let the scheduler settle it on a core
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def _cpu_seconds(pid):
    """User + system CPU seconds of a live process (Linux /proc), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    with busy_core(seconds=10) as p:
        c0, t0 = _cpu_seconds(p.pid), time.perf_counter()
        time.sleep(1.0)
        c1, t1 = _cpu_seconds(p.pid), time.perf_counter()
        pid = p.pid
    share = (c1 - c0) / (t1 - t0) if None not in (c0, c1) else float("nan")
    print(f"spinner pid {pid}: {share:.0%} of a core over {t1 - t0:.2f} s; "
          f"exit status {p.returncode} after the block")
    sys.exit(0 if share > 0.5 and p.returncode is not None else 1)
