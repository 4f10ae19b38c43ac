"""Distillation methods, one file each, registered by name in ``mmdistill.registry.METHODS``."""
