"""The function to make faster. The harness's agent may edit this file only."""

LIMIT = 30000  # primes below this are counted by the benchmark (a knob the offline agent may turn)


def primes_below(n: int) -> list[int]:
    """All primes p < n, in increasing order."""
    found = []
    for candidate in range(2, n):
        if all(candidate % d for d in range(2, candidate)):
            found.append(candidate)
    return found
