"""`python -m kdcore cache [--clear] [--kind KIND]`: what the cache folder (KD_CACHE_DIR) holds, kind by kind,
and clearing it. Everything there is rebuilt by the next run that needs it."""
from __future__ import annotations

import argparse
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from kdcore import paths
from kdcore.errors import KDError


@dataclass(frozen=True)
class KindContents:
    kind: str
    folder: Path
    files: list[Path]
    size: int  # bytes
    linked: bool = False  # the kind's folder is a link: what it points to is not ours to list or delete


def human_size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _plain_files(folder: Path) -> list[tuple[Path, int]]:
    """Every regular file under `folder` with its size; links (to files or folders) are neither followed nor
    listed, so nothing outside the cache folder is ever counted or deleted."""
    found = []
    for dirpath, _dirnames, filenames in os.walk(folder):  # os.walk does not follow links to folders
        for name in filenames:
            path = Path(dirpath, name)
            try:
                info = path.lstat()
            except FileNotFoundError:  # deleted meanwhile (a writer's rename, another clear)
                continue
            if stat.S_ISREG(info.st_mode):
                found.append((path, info.st_size))
    return found


def survey(kinds: list[str]) -> list[KindContents]:
    out = []
    for kind in kinds:
        folder = paths.cache_folder(kind)
        if folder.is_symlink():
            out.append(KindContents(kind, folder, [], 0, linked=True))
            continue
        files = _plain_files(folder) if folder.is_dir() else []
        out.append(KindContents(kind, folder, [p for p, _ in files], sum(size for _, size in files)))
    return out


def check_clearable(root: Path) -> None:
    """Refuse a cache folder that is, or holds, KD_HOME, the home directory or /: clearing deletes only the kinds'
    files, but a cache folder shared with other things is a mistake to point out, not a place to delete in."""
    resolved = root.resolve()
    for place, what in ((Path("/"), "/"), (Path.home(), "your home directory"), (paths.kd_home(), "KD_HOME")):
        place = place.resolve()
        if resolved == place or resolved in place.parents:
            raise KDError(f"refusing to clear {root}: the cache folder (KD_CACHE_DIR) "
                          f"{'is' if resolved == place else 'holds'} {what}; point KD_CACHE_DIR at a folder of its own.")


def clear(contents: KindContents) -> tuple[int, int, int]:
    """Delete the kind's files: (files deleted, bytes freed, files left because the system refused).

    Safe while a run reads or writes the cache. A run memory-maps its splits (torch.load(mmap=True)); on Linux and
    macOS deleting a file removes its name only, and the mapping (like any open file) keeps its pages readable
    until the run lets go (tests/test_cache_command.py reads mapped splits after clearing them). Decoded arrays
    and logits are read whole into memory. A file still being written has a temporary name (*.PID.tmp): deleting
    it makes the writer's rename into place fail, which paths.cached treats as an unwritable cache, so the run goes
    on with what it built. Windows refuses to delete a mapped file: such a file is left and counted."""
    deleted = freed = left = 0
    for path in contents.files:
        try:
            size = path.lstat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError:
            left += 1
            continue
        deleted, freed = deleted + 1, freed + size
    return deleted, freed, left


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clear", action="store_true", help="delete the cached files (a run rebuilds what it needs)")
    p.add_argument("--kind", choices=[*paths.CACHE_KINDS, "all"], default="all",
                   help="only this kind of file (default all)")


def _files(n: int) -> str:
    return f"{n} file{'' if n == 1 else 's'}"


def run(args: argparse.Namespace) -> int:
    from kdcore.commands.layers import format_table

    root = paths.cache_dir()
    kinds = list(paths.CACHE_KINDS) if args.kind == "all" else [args.kind]
    if args.clear:
        check_clearable(root)
    contents = survey(kinds)
    links = [c for c in contents if c.linked]
    if not args.clear:
        print(f"Cache folder: {root} (KD_CACHE_DIR){'' if root.is_dir() else ', not created yet'}")
        rows = [[c.kind, str(len(c.files)), human_size(c.size),
                 f"{paths.CACHE_KINDS[c.kind][1]} ({c.folder.name}/)"] for c in contents]
        if len(contents) > 1:
            rows.append(["total", str(sum(len(c.files) for c in contents)), human_size(sum(c.size for c in contents)),
                         ""])
        print(format_table(["KIND", "FILES", "SIZE", "HOLDS"], rows, right=[1, 2]))
        for c in links:
            print(f"{c.folder} is a link to {c.folder.resolve()}: not listed or cleared here.")
        print("Clear it with `python -m kdcore cache --clear [--kind KIND]`; a run rebuilds what it needs.")
        return 0
    results = [(c, *clear(c)) for c in contents if not c.linked]
    done = [f"{c.kind} {_files(n)} ({human_size(size)})" for c, n, size, _ in results if n]
    if done:
        print(f"Freed {human_size(sum(r[2] for r in results))} in {root}: {', '.join(done)}. "
              "The next run that needs them rebuilds them.")
    else:
        print(f"Nothing to clear in {root}.")
    left = sum(r[3] for r in results)
    if left:
        print(f"{_files(left)} could not be deleted (in use by a run?): clear again once it has finished.")
    for c in links:
        print(f"{c.folder} is a link to {c.folder.resolve()}: left alone.")
    return 0
