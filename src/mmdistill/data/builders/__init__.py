"""Offline build tools (``mmdistill data build``): AV-MNIST from MNIST and FSDD, the AV-Digits features, and the
locked output folder they install into. Never imported by a training run."""
