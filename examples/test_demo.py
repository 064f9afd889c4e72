"""A small demo suite for pytest-perfmon: slow, memory-hungry and CPU-hungry tests.

    pytest examples --perf-monitor --perf-print-summary
"""

import time

import pytest

MB = 1024 * 1024
_cache = []


@pytest.fixture
def database():
    time.sleep(0.15)  # a slow setup
    yield {"rows": 1000}
    time.sleep(0.05)  # a slow teardown


def test_query(database):
    assert database["rows"] == 1000


@pytest.mark.parametrize("delay", [0.01, 0.05, 0.2])
def test_slow_io(delay):
    time.sleep(delay)


def test_big_temporary_buffer():
    buf = b"\x00" * (150 * MB)  # a 150 MB spike, freed at once: peak rises, delta stays ~0
    assert len(buf) == 150 * MB


def test_leaky_cache():
    _cache.append(b"\x01" * (40 * MB))  # kept after the test: a 40 MB delta


def test_primes():
    limit = 200_000
    sieve = bytearray([1]) * limit
    sieve[0:2] = b"\x00\x00"
    for i in range(2, int(limit**0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytes(len(range(i * i, limit, i)))
    assert sum(sieve) == 17984


def test_busy_loop():
    deadline = time.process_time() + 0.3
    n = 0
    while time.process_time() < deadline:
        n += 1
    assert n > 0


@pytest.mark.parametrize("i", range(20))
def test_fast(i):
    assert i * i >= 0
