"""The measurement (fixed): the best of 7 timings of primes_below(20_000), in seconds. The best,
not the mean: other processes only ever make a timing slower."""

import time

from primes import primes_below

N = 20_000
times = []
for _ in range(7):
    start = time.perf_counter()
    result = primes_below(N)
    times.append(time.perf_counter() - start)
assert len(result) == 2262, "wrong answer"
print("---")
print(f"seconds: {min(times):.6f}")
