"""The training engine: run folders, the run assembly, the trainer, the teacher cache and the Python API."""

from .system import run_outputs  # noqa: F401  (declares what train and distill() write into their folders)
