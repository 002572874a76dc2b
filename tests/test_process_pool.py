"""data/process_pool.py: results in order on several processes, errors raised, and jobs drawn
only a bounded window ahead of the consumer (memory flat however many photos)."""
import os
import time

import pytest

from data import process_pool


def square_with_pid(value):
    return value * value, os.getpid()


def fails_on_seven(value):
    if value == 7:
        raise ValueError("seven")
    return value


def slow_square_with_pid(value):
    time.sleep(0.005)  # instant jobs let one worker drain the queue before the other starts
    return square_with_pid(value)


def test_results_come_in_order_from_several_processes():
    with process_pool.ordered_map(2, batch=3) as run:
        results = list(run(slow_square_with_pid, range(100)))
    assert [square for square, _ in results] == [value * value for value in range(100)]
    assert len({pid for _, pid in results} - {os.getpid()}) == 2


def test_jobs_are_drawn_a_bounded_window_ahead_of_the_consumer():
    drawn = []

    def jobs():
        for value in range(10_000):
            drawn.append(value)
            yield value

    batch, workers = 5, 2
    window = process_pool.IN_FLIGHT_PER_WORKER * workers * batch
    with process_pool.ordered_map(workers, batch=batch) as run:
        results = run(square_with_pid, jobs())
        for consumed in range(1, 200):
            assert next(results)[0] == (consumed - 1) ** 2
            assert len(drawn) <= consumed + window + batch  # the batch being consumed
    assert len(drawn) < 10_000


def test_an_error_of_a_job_is_raised_by_the_iterator():
    with process_pool.ordered_map(2, batch=2) as run:
        results = run(fails_on_seven, range(20))
        assert [next(results) for _ in range(6)] == list(range(6))
        with pytest.raises(ValueError, match="seven"):
            next(results)  # the batch of 6 and 7


def test_one_worker_runs_in_this_process():
    with process_pool.ordered_map(1) as run:
        assert [pid for _, pid in run(square_with_pid, range(5))] == [os.getpid()] * 5
