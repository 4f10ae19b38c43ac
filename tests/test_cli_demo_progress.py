"""``demo`` in a batch job (stderr not a terminal): one progress line per step, no bar redraws; ``--quiet``: none."""

from mmdistill.cli import main
from mmdistill.commands import demo


def _fake_steps(monkeypatch):
    def step(title):
        def run(out, seeds, quiet):
            out.mkdir(parents=True, exist_ok=True)
            (out / "summary.md").write_text(f"# {title}\n")
            return {"title": title, "command": "", "intro": ""}

        return run

    fake = [(name, step(name), None) for name in ("first", "second", "third")]
    monkeypatch.setattr(demo, "STEPS", fake)


def test_demo_writes_one_line_per_step_and_no_redraws_when_stderr_is_a_file(tmp_path, capsys, monkeypatch):
    _fake_steps(monkeypatch)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--seeds", "1"]) == 0
    err = capsys.readouterr().err  # captured: not a terminal, as in `2> log.txt`
    assert "\r" not in err and "\x1b[" not in err, "no progress-bar redraws in a log file"
    lines = err.splitlines()
    assert [line.split(":")[0] for line in lines] == ["demo 1/3 first", "demo 2/3 second", "demo 3/3 third"]
    assert all(line.endswith(" s") and "done in" in line for line in lines)


def test_demo_quiet_writes_no_progress(tmp_path, capsys, monkeypatch):
    _fake_steps(monkeypatch)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--seeds", "1", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_reproduce_prints_one_line_per_part_a_study_announces(tmp_path, capsys, monkeypatch):
    from mmdistill.commands import reproduce
    from mmdistill.studies.progress import announce

    def study(args, out):
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            announce(f"toy seed {seed}: teacher and 2 students trained")
        (out / "results.csv").write_text("x\n1\n")
        return "toy: done"

    target = reproduce.TARGETS["mfh-gamma"]
    monkeypatch.setitem(reproduce.TARGETS, "mfh-gamma", reproduce.Target(target.help, study, target.add_arguments))
    assert main(["reproduce", "mfh-gamma", "--seeds", "2", "--out", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert [line.rsplit(" (", 1)[0] for line in lines] == [
        "reproduce mfh-gamma: toy seed 0: teacher and 2 students trained",
        "reproduce mfh-gamma: toy seed 1: teacher and 2 students trained",
    ]
    assert all(line.endswith(" s)") for line in lines)


def test_data_build_av_mnist_prints_one_line_per_finished_part(tmp_path, capsys):
    import json

    from test_avmnist_build import write_fsdd, write_mnist

    write_mnist(tmp_path / "mnist")
    write_fsdd(tmp_path / "fsdd")
    argv = ["--mnist", str(tmp_path / "mnist"), "--fsdd", str(tmp_path / "fsdd"), "--out", str(tmp_path / "av")]
    assert main(["data", "build", "av-mnist", *argv, "--snr-db", "none"]) == 0
    lines = [line.rsplit(" (", 1)[0] for line in capsys.readouterr().err.splitlines()]
    meta = json.loads((tmp_path / "av" / "build.json").read_text())
    counts, recordings = meta["counts"], len(list((tmp_path / "fsdd").glob("*.wav")))
    images = counts["train"]["images"] + counts["test"]["images"]
    assert lines == [
        f"data build av-mnist: read {images} MNIST images and {recordings} FSDD recordings; "
        f"{meta['pca_components_removed']} principal components to remove",
        f"data build av-mnist: train split: {counts['train']['images']} image+audio pairs written",
        f"data build av-mnist: test split: {counts['test']['images']} image+audio pairs written",
    ]
