"""Packaged prompt templates (markdown files read with importlib.resources)."""
