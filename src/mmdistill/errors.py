"""Typed errors. Every message names the field at fault and what was expected."""

from __future__ import annotations


class MMDistillError(Exception):
    """Base class of every error mmdistill raises on purpose."""


class ConfigError(MMDistillError, ValueError):
    """A config key is unknown, has the wrong type, or points at a missing file."""


class BatchError(MMDistillError, ValueError):
    """A batch misses a modality, has a wrong shape/dtype, non-finite values or bad labels."""


class DataError(MMDistillError, ValueError):
    """A dataset on disk or in memory is malformed."""


class TargetError(BatchError, DataError):
    """A target (``"label"``) does not have the form its task expects (a BatchError and a DataError)."""


class CheckpointError(MMDistillError, ValueError):
    """A checkpoint or cache file is corrupt, truncated, or not a safetensors file."""


class TrainingError(MMDistillError, RuntimeError):
    """Training cannot go on (for example a non-finite loss term)."""


class OutputExistsError(MMDistillError, FileExistsError):
    """The output folder already holds a finished run."""


class MachineError(MMDistillError, RuntimeError):
    """The machine cannot do what was asked (no GPU, a DDP strategy that cannot start). CLI exit code 1."""


class OutputBusyError(MachineError):
    """Another mmdistill process holds the output folder's lock (a run is in progress there). CLI exit code 1."""
