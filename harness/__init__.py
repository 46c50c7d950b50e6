"""auto-log-research: a git-native harness for autonomous ML research."""

__version__ = "0.1.0"
