"""The measurement (fixed): the best of 3 timings of primes_below(20_000), in seconds."""

import time

from primes import primes_below

N = 20_000
times = []
for _ in range(3):
    start = time.perf_counter()
    result = primes_below(N)
    times.append(time.perf_counter() - start)
assert len(result) == 2262, "wrong answer"
print("---")
print(f"seconds: {min(times):.6f}")
