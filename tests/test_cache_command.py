"""`python -m kdcore cache`: what the cache folder holds, kind by kind, and clearing it safely (only the kinds'
files, never outside the folder, not while it is KD_HOME, the home directory or /), after which a run rebuilds it."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import yaml

from kdcore.cli import main


def put(path, size: int):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    return path


@pytest.fixture()
def cache(kd_home, tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("KD_CACHE_DIR", str(folder))
    return folder


def listing(capsys) -> tuple[dict[str, list[str]], str]:
    """`cache`'s rows by their first word, and its whole output."""
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    return {line.split()[0]: line.split() for line in out.splitlines() if line.split()}, out


def test_the_listing_shows_each_kind_with_its_files_and_size_and_the_folder(cache, capsys):
    rows, out = listing(capsys)
    assert f"Cache folder: {cache} (KD_CACHE_DIR), not created yet" in out
    assert rows["splits"][1:3] == ["0", "0"] and rows["total"][1:3] == ["0", "0"]

    put(cache / "idx" / "a.npz", 500)
    put(cache / "splits" / "b.pt", 2_000_000)
    put(cache / "splits" / "c.pt", 1_500_000)
    put(cache / "logits" / "d.pt", 4_000)
    rows, out = listing(capsys)
    assert f"Cache folder: {cache} (KD_CACHE_DIR)\n" in out
    assert rows["decoded"][1:4] == ["1", "500", "B"] and "(idx/)" in rows["decoded"]
    assert rows["splits"][1:4] == ["2", "3.5", "MB"] and "(splits/)" in rows["splits"]
    assert rows["logits"][1:4] == ["1", "4.0", "kB"] and "(logits/)" in rows["logits"]
    assert rows["total"][1:4] == ["4", "3.5", "MB"]

    assert main(["cache", "--kind", "logits"]) == 0  # one kind only
    out = capsys.readouterr().out
    assert "logits" in out and "splits" not in out.split("HOLDS")[1].split("Clear it")[0]


def test_clearing_a_kind_deletes_its_files_only_and_says_what_was_freed(cache, kd_home, tmp_path, capsys):
    kept = [put(cache / "idx" / "a.npz", 500), put(cache / "logits" / "d.pt", 4_000),
            put(cache / "notes.txt", 10),  # not a kind's: never touched
            put(kd_home / "runs" / "r1" / "checkpoint.pt", 10)]
    gone = [put(cache / "splits" / "b.pt", 2_000_000), put(cache / "splits" / "old.pt.123.tmp", 1_000)]
    outside = put(tmp_path / "elsewhere" / "big.pt", 100)
    os.symlink(outside, cache / "splits" / "link.pt")  # a link: neither followed nor deleted

    assert main(["cache", "--clear", "--kind", "splits"]) == 0
    out = capsys.readouterr().out
    assert out == (f"Freed 2.0 MB in {cache}: splits 2 files (2.0 MB). "
                   "The next run that needs them rebuilds them.\n")
    assert not any(p.exists() for p in gone) and all(p.exists() for p in kept) and outside.exists()
    assert (cache / "splits" / "link.pt").is_symlink()

    assert main(["cache", "--clear"]) == 0  # all kinds
    assert capsys.readouterr().out.startswith(f"Freed 4.5 kB in {cache}: decoded 1 file (500 B), logits 1 file (4.0 kB).")
    assert [p.exists() for p in kept] == [False, False, True, True] and outside.exists()
    assert main(["cache", "--clear"]) == 0
    assert capsys.readouterr().out == f"Nothing to clear in {cache}.\n"


def test_a_kinds_folder_that_is_a_link_is_left_alone(cache, tmp_path, capsys):
    outside = put(tmp_path / "bigdisk" / "logits" / "d.pt", 4_000)
    cache.mkdir()
    os.symlink(outside.parent, cache / "logits")
    rows, out = listing(capsys)
    assert rows["logits"][1:3] == ["0", "0"] and f"{cache / 'logits'} is a link to {outside.parent}" in out
    assert main(["cache", "--clear"]) == 0
    assert f"{cache / 'logits'} is a link to {outside.parent}: left alone." in capsys.readouterr().out
    assert outside.exists()


@pytest.mark.parametrize("where", ["kd_home", "home", "root", "above kd_home"])
def test_clearing_refuses_a_cache_folder_that_is_or_holds_kd_home_the_home_directory_or_root(
        where, kd_home, tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    folder = {"kd_home": kd_home, "home": home, "root": "/", "above kd_home": kd_home.parent}[where]
    monkeypatch.setenv("KD_CACHE_DIR", str(folder))
    victim = put(kd_home / "splits" / "x.pt", 10) if where != "home" else put(home / "splits" / "x.pt", 10)
    assert main(["cache", "--clear"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: refusing to clear {folder}: the cache folder (KD_CACHE_DIR) ")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert victim.exists()


def test_a_run_after_clearing_rebuilds_the_cache(cache, small_fashion_mnist, tmp_path, capsys):
    from kdcore.data import clear_cache
    from kdcore.lab.assets import teacher_path

    spec = tmp_path / "run.yaml"
    spec.write_text(yaml.safe_dump({
        "dataset": {"name": "fashion-mnist"}, "student": "mlp_64", "epochs": 1, "device": "cpu", "batch_size": 16,
        "probe_size": 10, "teacher": {"source": "checkpoint", "checkpoint": str(teacher_path("fashion-mnist"))}}))

    def train(out: str) -> dict[str, list[str]]:  # the listing's rows after a run
        clear_cache()  # a new process: nothing read yet
        assert main(["train", str(spec), "--out", str(tmp_path / out), "--fresh", "--quiet"]) == 0
        capsys.readouterr()
        return listing(capsys)[0]

    rows = train("first")  # what a run writes is where the listing looks
    assert [rows[kind][1] for kind in ("decoded", "splits", "logits")] == ["1", "1", "1"]
    assert main(["cache", "--clear"]) == 0
    assert capsys.readouterr().out.startswith(f"Freed {rows['total'][2]} {rows['total'][3]} in {cache}: decoded 1 file")
    assert listing(capsys)[0]["total"][1] == "0"
    rows = train("second")  # it still works and rebuilds all three
    assert [rows[kind][1] for kind in ("decoded", "splits", "logits")] == ["1", "1", "1"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc/self/maps")
def test_mapped_splits_stay_readable_after_their_file_is_cleared(cache, small_fashion_mnist, capsys):
    from kdcore.data import clear_cache, load_dataset

    load_dataset("fashion-mnist")  # built and kept
    mapped = load_dataset("fashion-mnist")  # read back, memory-mapped
    (kept,) = (cache / "splits").iterdir()
    maps = Path("/proc/self/maps")  # Linux's list of this process's mappings
    assert str(kept) in maps.read_text()  # really a map of the kept file
    assert main(["cache", "--clear", "--kind", "splits"]) == 0 and not kept.exists()
    assert f"{kept} (deleted)" in maps.read_text()  # its name is gone, the mapping is not
    clear_cache()
    fresh = load_dataset("fashion-mnist")  # built again from the IDX files
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(mapped, name).x, getattr(fresh, name).x)  # every page of the map still reads
