"""Batch-job logs: with stderr not a terminal, training prints one progress line per epoch."""

from __future__ import annotations

import re
import subprocess

from conftest import cli, cli_env

LINE = re.compile(r"^seed 0 (teacher|student|no_kd|\w+): epoch (\d+)/3 loss [\d.]+ val accuracy [\d.]+ .*\([\d.]+ s\)$")


def _train(tiny_config, tmp_path, *extra: str) -> str:
    log = tmp_path / "log.txt"
    with open(log, "w") as f:  # stderr redirected to a file, as under nohup or a scheduler
        proc = subprocess.run(
            cli("train", str(tiny_config(epochs=3)), "--out", str(tmp_path / "run"), *extra),
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=f,
            timeout=300,
        )
    assert proc.returncode == 0, log.read_text()
    return log.read_text()


def test_one_line_per_epoch_when_stderr_is_a_file(tiny_config, tmp_path):
    text = _train(tiny_config, tmp_path)
    lines = [ln for ln in text.splitlines() if LINE.match(ln)]
    by_part: dict[str, list[int]] = {}
    for ln in lines:
        m = LINE.match(ln)
        by_part.setdefault(m.group(1), []).append(int(m.group(2)))
    assert by_part, text
    for part, epochs in by_part.items():
        assert epochs == [1, 2, 3], (part, text)
    assert "\r" not in text  # no tqdm bar redraws in a log file


def test_quiet_silences_the_lines(tiny_config, tmp_path):
    text = _train(tiny_config, tmp_path, "--quiet")
    assert " epoch 1/3 " not in text, text
