"""``data build`` into a folder: a second concurrent build is refused, and a file put into the folder during a build
is never deleted (the new build is kept beside it instead)."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_env

import mmdistill.data.generated.rgbd_scenes as scenes
from mmdistill.cli import main
from mmdistill.errors import OutputExistsError

SMALL = {"n_scenes": 5, "size": 8}

# Builds scenes into argv[1], waiting (after the start-up checks) until the file argv[2] exists.
SLOW_BUILD = """
import sys, time
from pathlib import Path
import mmdistill.data.generated.rgbd_scenes as scenes
generate = scenes.generate_rgbd_scenes
def waiting(*args, **kwargs):
    print("building", flush=True)
    while not Path(sys.argv[2]).exists():
        time.sleep(0.02)
    return generate(*args, **kwargs)
scenes.generate_rgbd_scenes = waiting
scenes.write_rgbd_scenes(sys.argv[1], n_scenes=5, size=8)
print("done", flush=True)
"""


def _someone_writes_during_the_build(monkeypatch, out, name="notes.txt"):
    generate = scenes.generate_rgbd_scenes

    def and_meanwhile(*args, **kwargs):
        out.mkdir(exist_ok=True)
        (out / name).write_text("written by someone else during the build")
        return generate(*args, **kwargs)

    monkeypatch.setattr(scenes, "generate_rgbd_scenes", and_meanwhile)


def test_a_file_put_into_a_new_out_during_the_build_is_kept_and_the_build_too(tmp_path, monkeypatch):
    out = tmp_path / "scenes"
    _someone_writes_during_the_build(monkeypatch, out)
    with pytest.raises(OutputExistsError, match=r"notes\.txt appeared there during the build") as caught:
        scenes.write_rgbd_scenes(out, **SMALL)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    kept = [p for p in tmp_path.iterdir() if p.name.startswith(".scenes.partial-")]
    assert len(kept) == 1 and str(kept[0]) in str(caught.value) and (kept[0] / scenes.MARKER).is_file()


def test_overwrite_keeps_a_file_put_there_during_the_build_and_the_earlier_build(tmp_path, monkeypatch):
    out = tmp_path / "scenes"
    scenes.write_rgbd_scenes(out, **SMALL)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    _someone_writes_during_the_build(monkeypatch, out)
    with pytest.raises(OutputExistsError, match="notes.txt"):
        scenes.write_rgbd_scenes(out, seed=1, overwrite=True, **SMALL)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after.pop(Path("notes.txt")) and after == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".scenes.old-")]


def test_a_second_concurrent_build_into_one_folder_is_refused(tmp_path, capsys):
    out, go = tmp_path / "scenes", tmp_path / "go"
    first = subprocess.Popen(
        [sys.executable, "-c", SLOW_BUILD, str(out), str(go)], env=cli_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert first.stdout.readline().strip() == "building"
        argv = ["data", "build", "rgbd-scenes", "--out", str(out), "--param", "n_scenes=5", "--param", "size=8"]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert f"another data build is writing there (pid {first.pid})" in err and err.count("\n") == 1
        go.touch()
        assert first.stdout.readline().strip() == "done" and first.wait(timeout=60) == 0
    finally:
        go.touch()
        first.kill()
        first.wait()
    assert (out / scenes.MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["go", "scenes"], "no lock, staging or old folder left"


def test_av_mnist_keeps_a_file_put_into_out_during_the_build(tmp_path, monkeypatch):
    from test_avmnist_build import write_fsdd, write_mnist

    import mmdistill.data.builders.avmnist_build as avmnist

    write_mnist(tmp_path / "mnist")
    write_fsdd(tmp_path / "fsdd")
    out = tmp_path / "avmnist"
    avmnist.build_av_mnist(tmp_path / "mnist", tmp_path / "fsdd", out, snr_db=None)
    read_fsdd = avmnist.read_fsdd

    def and_meanwhile(folder):
        (out / "notes.txt").write_text("mine")
        return read_fsdd(folder)

    monkeypatch.setattr(avmnist, "read_fsdd", and_meanwhile)
    with pytest.raises(OutputExistsError, match=r"--out .*: notes\.txt appeared there during the build"):
        avmnist.build_av_mnist(tmp_path / "mnist", tmp_path / "fsdd", out, seed=1, snr_db=None, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / avmnist.MARKER).is_file()
