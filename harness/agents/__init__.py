"""Agent backends: each proposes one edit per experiment behind `Agent.propose`."""
