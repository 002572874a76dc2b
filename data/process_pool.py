"""An ordered map on worker processes with bounded memory: preprocess.py's image conversion
(and any per-file work of a data source) runs on it.

Jobs go to the workers in batches (one message each way per BATCH jobs: with one per image the
pool's own threads cost the main process ~0.7 ms per image, measured), and at most
IN_FLIGHT_PER_WORKER batches per worker are out at once: the jobs are drawn from their iterable
only as results are consumed, so neither the jobs nor the results waiting to be consumed grow
with the number of jobs, however slow the consumer (multiprocessing's imap queues every job at
once and keeps every result the consumer has not reached).
"""
import collections
import contextlib
import ctypes
import functools
import itertools
import multiprocessing
import signal

BATCH = 16  # jobs per message
# Batches out per worker: one being worked on, the next ones waiting, so a worker never waits for
# the main process, and a slow image delays the in-order consumer without idling the others.
IN_FLIGHT_PER_WORKER = 4


def _die_with_parent():
    # Pool workers of a SIGKILLed run would otherwise linger, blocked on their task pipe (Linux).
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled by the parent alone


def _run_batch(function, jobs):
    return [function(job) for job in jobs]


def _ordered(pool, window, batch, function, jobs):
    jobs = iter(jobs)
    pending = collections.deque()

    def submit():
        chunk = list(itertools.islice(jobs, batch))
        if chunk:
            pending.append(pool.apply_async(_run_batch, (function, chunk)))

    for _ in range(window):
        submit()
    while pending:
        results = pending.popleft().get()
        submit()
        yield from results


@contextlib.contextmanager
def ordered_map(workers, batch=BATCH):
    """Yields `run(function, jobs)`: an iterator over function(job) for each job, in order,
    computed on `workers` processes (in this one when workers <= 1). `function` must be a
    module-level function; an exception it raises is raised by the iterator."""
    if workers <= 1:
        yield map
        return
    methods = multiprocessing.get_all_start_methods()
    # fork: workers start instantly and share the parent's imports (no TensorFlow: preprocess.py
    # never imports it).
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    pool = context.Pool(workers, initializer=_die_with_parent)
    try:
        yield functools.partial(_ordered, pool, IN_FLIGHT_PER_WORKER * workers, batch)
        pool.close()
    finally:
        pool.terminate()
        pool.join()
