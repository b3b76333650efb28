"""HSI — home security intelligence: the application shell (settings, wiring, CLI, API)."""

__version__ = "0.1.0"
