"""Correctness: the benchmark only counts if these pass (fixed; the agent may not edit it)."""

from primes import primes_below


def test_small():
    assert primes_below(2) == []
    assert primes_below(3) == [2]
    assert primes_below(30) == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]


def test_count():
    assert len(primes_below(10_000)) == 1229


def test_edges():
    assert primes_below(0) == [] and primes_below(1) == []
    assert primes_below(98)[-1] == 97
