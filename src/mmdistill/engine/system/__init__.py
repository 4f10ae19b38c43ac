"""What a run does with the machine, apart from the training loop: its output folder and lock, checkpoints,
logs, the record a ``distill()`` folder keeps, and the Fabric/DDP process set-up."""
