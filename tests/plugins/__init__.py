"""Test-local plug-ins: each file adds one thing (a task, a method, a model) without touching lwdc's files."""
