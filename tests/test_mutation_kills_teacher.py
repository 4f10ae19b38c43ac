"""The teacher cache's smaller promises, each pinned where a mutation test found no test that would notice it broken:
where the cache lives, what a new cache folder says, the memory budget, the key and why a file's key is refused."""

from __future__ import annotations

import pytest

from mmdistill.engine.teacher import (
    CacheStorage,
    _key_of,
    _key_problem,
    announce_new_cache_dir,
    default_cache_dir,
    memory_budget_bytes,
)
from mmdistill.errors import CheckpointError


def test_the_cache_lives_under_mmdistill_cache_or_the_users_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("MMDISTILL_CACHE", str(tmp_path / "own"))
    assert default_cache_dir() == tmp_path / "own" / "teacher"
    monkeypatch.delenv("MMDISTILL_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "mmdistill" / "teacher"


def test_a_new_cache_folder_is_made_with_its_parents_and_announced_once(tmp_path, capsys):
    folder = tmp_path / "a" / "b"
    announce_new_cache_dir(folder)
    assert folder.is_dir()
    assert capsys.readouterr().err == (
        f"mmdistill: caching teacher outputs in {folder} (set cache.dir=PATH or MMDISTILL_CACHE to move it, "
        "cache.enabled=false to turn it off)\n"
    )
    announce_new_cache_dir(folder)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("raw", "expected"), [("2", 2 * 2**20), ("0.5", 2**19), ("0", 0)])
def test_the_memory_budget_is_mmdistill_cache_memory_mb_in_bytes(monkeypatch, raw, expected):
    monkeypatch.setenv("MMDISTILL_CACHE_MEMORY_MB", raw)
    assert memory_budget_bytes() == expected


@pytest.mark.parametrize("raw", ["-1", "lots", "nan"])
def test_a_memory_budget_that_is_no_size_is_named(monkeypatch, raw):
    monkeypatch.setenv("MMDISTILL_CACHE_MEMORY_MB", raw)
    with pytest.raises(CheckpointError) as err:
        memory_budget_bytes()
    assert str(err.value) == f"MMDISTILL_CACHE_MEMORY_MB={raw!r}: expected a number of MiB >= 0"


def test_only_a_storage_other_than_the_default_enters_the_key():
    assert CacheStorage().describe() == {}
    assert CacheStorage("float16", 5).describe() == {"storage": {"dtype": "float16", "top_k": 5}}
    assert CacheStorage(top_k=3).describe() == {"storage": {"dtype": "float32", "top_k": 3}}


def test_the_key_does_not_depend_on_the_order_of_the_description():
    assert _key_of({"b": 1, "a": [2]}) == _key_of({"a": [2], "b": 1})
    assert _key_of({"a": 1}) != _key_of({"a": 2})
    assert len(_key_of({})) == 32


def test_a_file_built_for_another_key_says_what_differs():
    desc = {"a": 1, "b": 3, "c": 4}
    assert _key_problem({"cache_key": "k", "cache_description": dict(desc)}, "k", desc) is None
    assert _key_problem({}, "k", desc) == (
        "the file does not say which key it was built for (another version, or not a cache file)"
    )
    stored = {"cache_key": "old", "cache_description": {"a": 1, "b": 2}}
    assert _key_problem(stored, "new", desc) == (
        "the file was built for key 'old', not this run's 'new' (differs in: b, c); it was copied or renamed"
    )
    assert _key_problem({"cache_key": "old", "cache_description": dict(desc)}, "new", desc) == (
        "the file was built for key 'old', not this run's 'new' (differs in: the key); it was copied or renamed"
    )
    assert _key_problem({"cache_key": "k"}, "k", {"a": 1}) == (
        "the file was built for key 'k', not this run's 'k' (differs in: a); it was copied or renamed"
    )


def test_a_cache_file_describes_what_its_key_hashes_by_name(toy_splits):
    import torch

    from mmdistill.engine.teacher import cache_description
    from mmdistill.masking import Masker
    from mmdistill.methods.base import TeacherRequest
    from mmdistill.models.multimodal import ModelConfig, build_model

    torch.manual_seed(0)
    specs = toy_splits.train.specs()
    teacher = build_model(ModelConfig(modalities=["a", "b"], encoder={"hidden": [8], "out_dim": 6}), specs, 2)
    masker = Masker(specs, "zeros")
    plain = cache_description(teacher, toy_splits.train, TeacherRequest(), masker)
    assert set(plain) == {"format", "mmdistill", "teacher", "data", "features", "views", "masking", "mask_state"}
    assert (plain["format"], plain["features"], plain["views"], plain["masking"], plain["mask_state"]) == (
        3,
        [],
        [],
        None,
        None,
    )
    views = cache_description(teacher, toy_splits.train, TeacherRequest(views=(("a",),)), masker)
    assert views["views"] == [["a"]] and views["masking"] == masker.strategy and isinstance(views["mask_state"], str)
