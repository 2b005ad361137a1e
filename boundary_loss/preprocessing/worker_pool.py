"""Slicing patients in parallel: a process pool that stops cleanly on the first failure.

`run_jobs` slices a list of patients, in `workers` processes when there are more than one, with
a progress bar. At most one patient per worker is in flight, so a worker's death (killed by the
out-of-memory killer, for instance) names the patients it may have been slicing. The first
error, a dead worker or Ctrl-C cancels what is not yet started and terminates the workers, and
waits until they have exited, so nothing keeps writing into the temporary folder the caller then
removes.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import connection
from pathlib import Path

import torch
from tqdm import tqdm

from boundary_loss.preprocessing.slices import (
    PatientJob,
    PatientResult,
    SliceSettings,
    slice_patient,
)
from boundary_loss.preprocessing.volumes import SliceError, natural_key


def _init_worker() -> None:
    """Set up a pool worker: one torch thread, and Ctrl-C left to the parent.

    One thread per worker process: the pool is the parallelism (and forked OpenMP pools hang).
    Ctrl-C reaches every process of the terminal; the parent stops the workers and cleans up,
    so a worker ignores it instead of dying with a traceback of its own.
    """
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def default_workers() -> int:
    """The number of CPUs this process may use.

    Returns:
        The CPUs of its affinity mask on Linux, else the CPU count (at least 1).
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _stop_workers(executor: ProcessPoolExecutor, timeout: float = 10.0) -> None:
    """Terminate the pool's worker processes now and wait until they have exited.

    Waiting matters: the caller then removes the temporary folder, which a worker still
    finishing a write would fill again. One that outlives SIGTERM by `timeout` seconds is killed.
    """
    processes = list((getattr(executor, "_processes", None) or {}).values())
    sentinels = {}
    for process in processes:
        if process.is_alive():
            process.terminate()
            sentinels[process.sentinel] = process
    deadline = time.monotonic() + timeout
    while sentinels and time.monotonic() < deadline:
        for sentinel in connection.wait(list(sentinels), deadline - time.monotonic()):
            del sentinels[sentinel]
    for process in sentinels.values():
        process.kill()


def _run_pool(
    jobs: list[PatientJob],
    settings: SliceSettings,
    workers: int,
    dest: Path,
    done: Callable[[], None],
) -> list[PatientResult]:
    """Slice patients in `workers` processes, one patient in flight per worker.

    Keeping no more patients in flight than workers means a worker's death names the patients
    it may have been slicing; the first error cancels what is not yet started and terminates
    the workers, so nothing keeps writing into the temporary folder.

    Args:
        jobs: the patients to slice.
        settings: what a worker needs to slice them.
        workers: the number of processes.
        dest: the destination, named when a worker dies.
        done: called once per sliced patient (the progress bar).

    Returns:
        The results of the jobs, in the order they finish.

    Raises:
        SliceError: a worker raised it, or a worker died (killed by the out-of-memory killer,
            for instance).
    """
    executor = ProcessPoolExecutor(workers, initializer=_init_worker)
    queue = iter(jobs)
    running: dict[Future, PatientJob] = {}
    results = []

    def submit_next() -> None:
        job = next(queue, None)
        if job is not None:
            running[executor.submit(slice_patient, job, settings)] = job

    failed = True
    try:
        try:
            for _ in range(workers):
                submit_next()
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    results.append(future.result())  # a worker's SliceError is raised here
                    del running[future]
                    done()
                    submit_next()
        except BrokenProcessPool:
            patients = sorted((job.patient for job in running.values()), key=natural_key)
            when = f"while slicing patient {' or '.join(patients)}" if patients else "while idle"
            raise SliceError(
                f"a slicing worker died (killed, e.g. by the out-of-memory killer?) {when}; "
                f"nothing was written at {dest}; try fewer --workers"
            ) from None
        failed = False
    finally:
        if failed:
            _stop_workers(executor)
        # After a failure the workers are gone already; not waiting for the pool's manager
        # thread also covers a Ctrl-C that came while the pool was starting that thread.
        executor.shutdown(wait=not failed, cancel_futures=True)
    return results


def run_jobs(
    jobs: list[PatientJob],
    settings: SliceSettings,
    workers: int,
    desc: str,
    progress: bool,
    dest: Path,
) -> list[PatientResult]:
    """Slice patients, in a process pool when `workers` > 1, with a progress bar.

    Args:
        jobs: the patients to slice.
        settings: what a worker needs to slice them.
        workers: the number of processes; 1 slices in this process.
        desc: the progress bar's label.
        progress: show the progress bar.
        dest: the destination, named when a worker dies.

    Returns:
        The results of the jobs, in the order they finish.

    Raises:
        SliceError: bad input, a full disk, or a pool worker that died.
    """
    bar = tqdm(total=len(jobs), desc=desc, unit="patient", disable=not progress)
    with bar:
        if workers > 1:
            return _run_pool(jobs, settings, workers, dest, bar.update)
        results = []
        for job in jobs:
            results.append(slice_patient(job, settings))
            bar.update()
        return results
