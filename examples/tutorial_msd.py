"""Tutorial: distil a multimodal model with MSD, from Python, with your own nn.Modules.

Run:  python examples/tutorial_msd.py            (about a minute on 2 CPU cores)

mmdistill needs two things of a model: a ``modalities`` attribute (the batch keys it reads)
and ``forward(batch) -> logits``, where ``batch`` is a dict of tensors. Nothing else: no base
class, no special forward. Here a teacher and a smaller student read an image and a sound
(AV-Digits, bundled), and the student is distilled with MSD: Hinton KD on the full input
plus one KD term per modality-only input, weighted per example by the teacher's saliency.
"""

import os

import torch
from torch import nn

from mmdistill.config import TrainerConfig
from mmdistill.data import build_splits
from mmdistill.engine.api import distill

EPOCHS = int(os.environ.get("MMDISTILL_TUTORIAL_EPOCHS", 20))
OUT = os.environ.get("MMDISTILL_TUTORIAL_OUT", "runs/tutorial-msd")


class ImageAudioNet(nn.Module):
    """A CNN on the 8x8 image, a 1-D CNN on the log-mel spectrogram, concatenated, then a head."""

    modalities = ("image", "audio")

    def __init__(self, width: int, audio_bands: int, num_classes: int = 10) -> None:
        super().__init__()
        self.image = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.audio = nn.Sequential(
            nn.Conv1d(audio_bands, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten()
        )
        self.head = nn.Linear(5 * width, num_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        image = batch["image"].reshape(-1, 1, 8, 8)
        return self.head(torch.cat([self.image(image), self.audio(batch["audio"])], dim=1))


def main() -> None:
    torch.set_num_threads(1)
    data = build_splits("av-digits")
    print(data.describe())
    bands = data.train.tensors["audio"].shape[1]
    torch.manual_seed(0)
    teacher, student = ImageAudioNet(64, bands), ImageAudioNet(8, bands)
    trainer = TrainerConfig(epochs=EPOCHS, batch_size=64, optimizer={"name": "adam", "lr": 3e-3})

    t = distill(teacher, None, data, f"{OUT}/teacher", method="supervised", trainer=trainer)
    msd = distill(
        student,
        teacher,
        data,
        f"{OUT}/msd",
        method="msd",
        method_params={"temperature": 4.0, "lam": 0.5, "weighting": "instance"},
        trainer=trainer,
    )
    print(f"teacher test accuracy {t.test['accuracy']:.2f}%; MSD student {msd.test['accuracy']:.2f}%")
    print(f"per-epoch loss terms (ce, kd, kd/image, kd/audio) are in {OUT}/msd/metrics.csv")


if __name__ == "__main__":
    main()
