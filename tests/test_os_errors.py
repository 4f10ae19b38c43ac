"""Ordinary OS conditions end in one line and an exit code, never a raw traceback (failures.py):
read-only output or cache folder, a file as cache.dir, a full disk, Ctrl-C, no GPU, a strategy that cannot start.
Exit codes: 2 bad input, 1 the environment, 130 interrupted. An error before work starts leaves no folder."""

import errno
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import cli, cli_env

from mmdistill.cli import main
from mmdistill.engine.system import runfolder
from mmdistill.failures import explain


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size_kb, read_only) -> a fresh tmpfs under tmp_path; skips where mounting is not permitted."""
    mounted = []

    def mount(size_kb: int = 1024, read_only: bool = False) -> Path:
        point = tmp_path / f"fs{len(mounted)}"
        point.mkdir()
        opts = f"size={size_kb}k" + (",ro" if read_only else "")
        try:
            proc = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)], capture_output=True, text=True
            )
        except OSError as err:  # no mount command
            pytest.skip(f"cannot mount a tmpfs here: {err}")
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {proc.stderr.strip()[:200]}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def train(config, out, *extra) -> int:
    return main(["train", str(config), "--out", str(out), "--quiet", "--no-baseline", *extra])


def read_only_folder(tmp_path, tmpfs) -> Path:
    if os.geteuid() != 0:  # permissions are enough for a normal user
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    return tmpfs(64, read_only=True)  # root ignores permissions: a read-only file system


def test_a_read_only_output_folder_is_one_line_exit_1_and_leaves_nothing(tiny_config, tmp_path, tmpfs, capsys):
    folder = read_only_folder(tmp_path, tmpfs)
    for out in (folder / "run", folder):  # a new folder inside, and the (empty) folder itself
        assert train(tiny_config(epochs=1), out) == 1
        line = one_line(capsys.readouterr().err)
        assert str(folder) in line and ("read-only file system" in line or "permission denied" in line), line
        assert list(folder.iterdir()) == []


def test_a_file_or_read_only_cache_dir_is_named_before_anything_is_written(tiny_config, tmp_path, tmpfs, capsys):
    (tmp_path / "a-file").write_text("x")
    assert train(tiny_config(epochs=1), tmp_path / "out", f"cache.dir={tmp_path / 'a-file' / 'cache'}") == 2
    line = one_line(capsys.readouterr().err)
    assert "cache.dir" in line and "a-file is a file, not a folder" in line
    assert train(tiny_config(epochs=1), tmp_path / "out", f"cache.dir={read_only_folder(tmp_path, tmpfs)}") == 1
    line = one_line(capsys.readouterr().err)
    assert "cache.dir: cannot write in" in line
    assert not (tmp_path / "out").exists()


def test_a_full_disk_is_one_line_and_the_run_resumes_once_there_is_space(
    tiny_config, tmp_path, tmpfs, capsys, monkeypatch
):
    config = tiny_config(epochs=3)
    try:
        disk = tmpfs(1024)
    except pytest.skip.Exception:  # no tmpfs: the same failure from a replace that reports a full disk
        disk = tmp_path / "disk"
        real_replace = os.replace

        def full(src, dst, *a, **k):
            if str(disk) in str(dst) and str(dst).endswith("last.safetensors"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_replace(src, dst, *a, **k)

        monkeypatch.setattr(os, "replace", full)
    else:
        (disk / "filler").write_bytes(b"\0" * (1024 - 40) * 1024)  # leaves ~40 KB: the first checkpoints do not fit
    assert train(config, disk / "run") == 1
    line = one_line(capsys.readouterr().err)
    assert "no space left on the device" in line and "--resume" in line, line
    assert not list((disk / "run").rglob("*.tmp")) if (disk / "run").exists() else True, "no temp file may be left"
    monkeypatch.undo()
    (disk / "filler").unlink(missing_ok=True)
    assert train(config, disk / "run", "--resume") == 0 and (disk / "run" / "metrics.json").is_file()


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_is_one_line_exit_130_and_leaves_a_resumable_run(tiny_config, tmp_path):
    config, run = tiny_config(epochs=2000), tmp_path / "run"
    proc = subprocess.Popen(
        cli("train", str(config), "--out", str(run), "--quiet"),
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as a terminal sends it: a shell without job control starts background commands with SIGINT ignored,
        # which the child would inherit, and then finish the run instead of stopping
        preexec_fn=_sigint_default,
    )
    try:
        deadline = time.time() + 120
        while not (run / "seed_0" / "teacher" / "checkpoints" / "last.safetensors").exists() and time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=180)  # generous: CI machines are shared
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert one_line(err) == f"mmdistill train: error: interrupted; continue the run in {run} with --resume"
    assert runfolder.check(run, "train", "metrics.json", resume=True).action == "resume"
    assert (run / "seed_0" / "teacher" / "checkpoints" / "last.safetensors").is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_no_gpu_and_ddp_spawn_are_one_line_and_leave_nothing(tiny_config, tmp_path, capsys):
    # refused by the config check against this machine (a key to change: exit 2), before Fabric is started
    assert train(tiny_config(epochs=1), tmp_path / "out", "trainer.accelerator=gpu") == 2
    line = one_line(capsys.readouterr().err)
    assert "trainer.accelerator" in line and "no" in line and "GPU" in line
    assert train(tiny_config(epochs=1), tmp_path / "out", "trainer.strategy=ddp_spawn") == 2
    assert "trainer.strategy" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_mmdistill_debug_keeps_the_traceback(tiny_config, tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("x")
    monkeypatch.setenv("MMDISTILL_DEBUG", "1")
    with pytest.raises(Exception, match="cache.dir"):
        train(tiny_config(epochs=1), tmp_path / "out", f"cache.dir={tmp_path / 'a-file'}")


class SafetensorError(Exception):  # the name safetensors' Rust extension gives its I/O errors
    pass


@pytest.mark.parametrize(
    "err,code,text",
    [
        (
            OSError(errno.ENOSPC, "No space left on device", "/runs/x/last.safetensors"),
            1,
            "/runs/x/last.safetensors: no space left",
        ),
        (PermissionError(errno.EACCES, "Permission denied", "/runs/x"), 1, "/runs/x: permission denied"),
        (OSError(errno.EROFS, "Read-only file system", "/mnt/ro"), 1, "/mnt/ro: read-only file system"),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/a/file/x"), 1, "a file is in the way"),
        (
            OSError(errno.ENOSPC, "No space left on device"),
            1,
            "free some space or choose a folder on another disk (while writing to --out r); resume",
        ),
        (
            SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
            1,
            "no space left",
        ),
        (KeyboardInterrupt(), 130, "interrupted; resume"),
        (MemoryError(), 1, "out of memory"),
    ],
)
def test_explain_gives_one_line_and_the_exit_code(err, code, text):
    got = explain(err, "writing to --out r", "resume")
    assert got is not None and got[0] == code and text in got[1] and "\n" not in got[1], got
    assert explain(ZeroDivisionError("a bug")) is None, "a bug keeps its traceback"
