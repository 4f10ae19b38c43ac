"""Nothing in the package unpickles a file or loads YAML unsafely (a source-level check)."""

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mmdistill"

FORBIDDEN = [
    (re.compile(r"\bimport pickle\b|\bfrom pickle\b|\bimport dill\b|\bcloudpickle\b"), "pickle modules"),
    (re.compile(r"allow_pickle\s*=\s*True"), "np.load(allow_pickle=True)"),
    (re.compile(r"(?<![\w.])yaml\.(load|unsafe_load|full_load)\("), "yaml.load without the safe loader"),
    (re.compile(r"weights_only\s*=\s*False"), "torch.load(weights_only=False)"),
]


def test_no_unsafe_deserialisation_in_the_package():
    offences = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        for pattern, what in FORBIDDEN:
            for m in pattern.finditer(text):
                offences.append(f"{path.relative_to(SRC)}:{text[: m.start()].count(chr(10)) + 1}: {what}")
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in m.group(1):
                offences.append(f"{path.relative_to(SRC)}: torch.load without weights_only=True")
    assert not offences, "\n".join(offences)


def test_the_check_catches_an_offence(tmp_path):
    assert FORBIDDEN[1][0].search("np.load(f, allow_pickle=True)")
    assert FORBIDDEN[2][0].search("yaml.load(text)") and not FORBIDDEN[2][0].search("yaml.safe_load(text)")


def test_the_strict_yaml_loader_is_a_safe_loader():
    """strict_yaml.load (what config files go through) builds on PyYAML's SafeConstructor: no python/object tags."""
    import pytest
    import yaml

    from mmdistill import strict_yaml

    assert issubclass(strict_yaml.StrictLoader, yaml.constructor.SafeConstructor)
    assert not issubclass(strict_yaml.StrictLoader, yaml.constructor.FullConstructor)
    with pytest.raises(yaml.YAMLError):
        strict_yaml.load("!!python/object/apply:os.system ['echo pwned']")
    assert FORBIDDEN[2][0].search("x = yaml.load(text)") and not FORBIDDEN[2][0].search("strict_yaml.load(text)")
