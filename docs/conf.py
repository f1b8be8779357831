"""Sphinx configuration for the sipcore docs."""

project = "sipcore"
author = "sipcore developers"
copyright = "2026, sipcore developers"
extensions: list[str] = []
master_doc = "index"
exclude_patterns = ["_build"]
html_theme = "alabaster"
