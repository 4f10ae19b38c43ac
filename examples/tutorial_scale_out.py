"""Tutorial: scale out with DDP — the same run on several processes, GPUs or machines.

Training runs on Lightning Fabric, so scaling out changes the config, not the code:

    # 1 machine, 4 GPUs:
    mmdistill train my.yaml trainer.accelerator=gpu trainer.devices=4 trainer.strategy=ddp --out runs/x

    # 2 machines x 4 GPUs: run the same command on each machine with Fabric's launcher variables
    MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 NODE_RANK=0 \\
      mmdistill train my.yaml trainer.accelerator=gpu trainer.devices=4 trainer.num_nodes=2 \\
        trainer.strategy=ddp --out runs/x
    # ... and NODE_RANK=1 on the second machine (or launch both with `fabric run` / your cluster's launcher).

What changes: ``trainer.batch_size`` stays the *global* batch (each of N processes gets
batch_size / N), so results match a 1-process run up to float reduction order; only global
rank 0 writes files; the teacher cache is built by rank 0 and read by all; metrics are
all-reduced. ``trainer.precision=bf16-mixed`` turns on mixed precision where supported.

This script runs the CPU version of that (2 processes, gloo) on the bundled toy task.
Run:  python examples/tutorial_scale_out.py
"""

import os
import subprocess
import sys
from importlib import resources

OUT = os.environ.get("MMDISTILL_TUTORIAL_OUT", "runs/tutorial-scale-out")


def main() -> None:
    config = str(resources.files("mmdistill") / "configs" / "demo.yaml")
    command = [
        sys.executable,
        "-m",
        "mmdistill",
        "train",
        config,
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "trainer.accelerator=cpu",
        "trainer.epochs=3",
        "trainer.num_threads=1",
        "--out",
        OUT,
        "--overwrite",
        "--quiet",
    ]
    print(" ".join(command))
    subprocess.run(command, check=True)
    with open(os.path.join(OUT, "summary.md")) as summary:
        print(summary.read())


if __name__ == "__main__":
    main()
