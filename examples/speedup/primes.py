"""The function to make faster. The harness's agent may edit this file only."""

SEGMENT_SIZE = 16  # numbers sieved per block: any size gives the same primes; it only sets the speed


def primes_below(n: int) -> list[int]:
    """All primes p < n, in increasing order (a segmented sieve of Eratosthenes)."""
    if n < 3:
        return []
    root = int(n**0.5) + 1
    base = [p for p in range(2, root + 1) if all(p % d for d in range(2, int(p**0.5) + 1))]
    found: list[int] = []
    for low in range(2, n, SEGMENT_SIZE):
        high = min(low + SEGMENT_SIZE, n)
        block = bytearray([1]) * (high - low)
        for p in base:
            if p * p >= high:
                break
            start = max(p * p, (low + p - 1) // p * p)
            block[start - low :: p] = bytes(len(range(start, high, p)))
        found.extend(low + i for i, flag in enumerate(block) if flag)
    return found
