"""Carry benchmark runs between machines through the repository, so a run longer than a session resumes on the
next machine instead of starting again.

    python -m bench.carry save      # cache -> bench/state/ (before a session ends; then commit bench/state/)
    python -m bench.carry restore   # bench/state/ -> cache (on a fresh machine, before bench.queue / bench.cifar)

What ``save`` keeps of each run folder of the cache (``~/.cache/lwdc/bench/cifar/<model>_<schedule>_s<seed>/<run>``):

* a finished run (it has ``result.json``): that file, which is all ``bench.cifar`` needs to skip the run, and its
  final model as data (``model_state.pt`` + ``model_arch.json``, about 1 MB for a ResNet-20), which
  ``bench.remeasure`` times on the next machine; its checkpoints are dropped from the state, except the
  baseline's, which every other run starts from, and a finished LWDC point's search (4.5 MB for a ResNet-20),
  from whose trained supernet the random draws of ``bench.random_arch`` start;
* an unfinished run: every checkpoint and record in it (``checkpoints/*.pt``, ``prune.json``, ...), so the same
  ``bench.cifar`` command resumes it after its last finished epoch.

The weight-sharing benchmark's run folders (``~/.cache/lwdc/bench/share/<set>/<run>``, ``bench.share``) are
carried the same way under ``bench/state/share/``, and the 1-D benchmark's
(``~/.cache/lwdc/bench/signals/<set>/<model>_<split>/<run>``, ``bench.signals``) under ``bench/state/signals/``:
those are ``lwdc.compress`` run folders, finished when they hold ``report.json``; an LWDC point keeps its search
there too (its random draws start from it), a draw does not. Folders of capped smoke runs (``_mb<N>`` in the
name) are not carried. Measured latency tables (``lwdc.costs``' cache, one file per CPU and software fingerprint)
go to ``bench/state/latency/``, so a table built on an idle machine serves the next machine of the same kind and a
latency-cost run resumed there prices its branches as before; another CPU's runs never read it. ``restore`` copies what the cache lacks and
never replaces a file the cache already has (that copy may be further along), unless ``--overwrite``.
"""
from __future__ import annotations

import argparse
import filecmp
import shutil
from pathlib import Path

from lwdc.costs.latency import default_cache_dir

__all__ = ["save", "restore", "save_tables"]

STATE = Path(__file__).resolve().parent / "state"
CACHE = Path.home() / ".cache" / "lwdc" / "bench" / "cifar"
#: other benchmarks whose run folders are carried: state subfolder -> cache folder
AREAS = {"share": CACHE.parent / "share", "signals": CACHE.parent / "signals"}
#: an area's layout where it is not bench.cifar's: how many folder levels below its cache folder the run folders
#: lie (bench.cifar's: <group>/<run>), and the record a finished run holds (bench.cifar's result.json; a
#: bench.cifar folder also holds lwdc.compress's report.json before its result is written, so that one would not do)
LAYOUT = {"signals": (3, "report.json")}
TABLES = "latency"      # state subfolder of the measured latency tables (default_cache_dir(), flat JSON files)
FINISHED = ("model_state.pt", "model_arch.json")     # what a finished run keeps beside its record


def _run_folders(root: Path, include_capped: bool, depth: int = 2) -> list[Path]:
    folders = [Path(root)]
    for _ in range(depth):
        folders = [sub for folder in folders for sub in folder.iterdir() if sub.is_dir()]
    return sorted(run for run in folders if include_capped or "_mb" not in run.relative_to(root).as_posix())


def _carried_files(run: Path, marker: str = "result.json") -> list[Path]:
    """The files of ``run`` that the state keeps (see the module docstring); atomic-write temporaries never."""
    if (run / marker).is_file():
        keep = [run / marker] + [run / name for name in FINISHED if (run / name).is_file()]
        if run.name == "baseline":
            keep += sorted((run / "checkpoints").glob("*.pt"))
        elif (run.name.startswith("lwdc-") and "-random-" not in run.name
              and (run / "checkpoints" / "search.pt").is_file()):
            keep.append(run / "checkpoints" / "search.pt")
        return keep
    return sorted(p for p in run.rglob("*") if p.is_file() and not p.name.endswith(".tmp") and p.name != ".lock")


def _copy_if_changed(src: Path, dst: Path) -> bool:
    """Copy ``src`` to ``dst`` atomically unless ``dst`` already holds the same bytes; whether it copied."""
    if dst.exists() and filecmp.cmp(src, dst, shallow=False):
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)
    return True


def save(cache: Path = CACHE, state: Path = STATE, include_capped: bool = False, log=print,
         layout: tuple[int, str] = (2, "result.json")) -> list[Path]:
    """Mirror the cache's run folders into ``state``; returns the files written. Files the state holds for a run
    that are no longer carried (the checkpoints of a run that has since finished) are removed. ``layout``: the
    run folders' depth below ``cache`` and the file that marks one finished (``LAYOUT``)."""
    depth, marker = layout
    written = []
    for run in _run_folders(cache, include_capped, depth):
        name = run.relative_to(cache).as_posix()
        target = state / name
        keep = {p.relative_to(run) for p in _carried_files(run, marker)}
        written += [target / rel for rel in sorted(keep) if _copy_if_changed(run / rel, target / rel)]
        if target.exists():
            for old in sorted(p for p in target.rglob("*") if p.is_file() and p.relative_to(target) not in keep):
                old.unlink()
                log(f"dropped {old.relative_to(state)} (the run has finished)")
            for folder in sorted((p for p in target.rglob("*") if p.is_dir()), reverse=True):
                if not any(folder.iterdir()):
                    folder.rmdir()
        state_of = "finished" if (run / marker).exists() else "unfinished, checkpoints kept"
        log(f"{name}: {state_of}")
    return written


def save_tables(tables: Path, state: Path, log=print) -> list[Path]:
    """Copy every measured latency table in ``tables`` that ``state`` lacks or holds an older copy of."""
    sources = sorted(Path(tables).glob("*.json")) if Path(tables).is_dir() else []
    written = [Path(state) / src.name for src in sources if _copy_if_changed(src, Path(state) / src.name)]
    log(f"latency tables: saved {len(written)} changed file(s) into {state}")
    return written


def restore(state: Path = STATE, cache: Path = CACHE, overwrite: bool = False, log=print) -> list[Path]:
    """Copy the state's files into the cache where the cache lacks them (or differs, with ``overwrite``)."""
    written = []
    for src in sorted(p for p in Path(state).rglob("*") if p.is_file() and p.name != "README.md"
                      and p.relative_to(state).parts[0] not in (*AREAS, TABLES)):
        dst = Path(cache) / src.relative_to(state)
        if dst.exists():
            if filecmp.cmp(src, dst, shallow=False):
                continue
            if not overwrite:
                log(f"kept the cache's {dst} (it differs from {src}; --overwrite takes the state's)")
                continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        written.append(dst)
    log(f"restored {len(written)} file(s) into {cache}")
    return written


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("save", "restore"))
    p.add_argument("--cache-dir", default=str(CACHE), help="bench.cifar's run folders")
    p.add_argument("--state-dir", default=str(STATE), help="the repository's copy")
    p.add_argument("--overwrite", action="store_true", help="restore: replace cache files that differ")
    a = p.parse_args(argv)
    cache, state = Path(a.cache_dir).expanduser(), Path(a.state_dir)
    if a.action == "save":
        if not cache.is_dir():
            raise SystemExit(f"no benchmark cache at {cache}: nothing to save (run bench.cifar first, or pass "
                             "--cache-dir)")
        print(f"saved {len(save(cache, state))} changed file(s) into {state}")
        for area, folder in AREAS.items():
            if folder.is_dir() and a.cache_dir == str(CACHE):
                written = save(folder, state / area, layout=LAYOUT.get(area, (2, "result.json")))
                print(f"{area}: saved {len(written)} changed file(s) into {state / area}")
        if a.cache_dir == str(CACHE):
            save_tables(default_cache_dir(), state / TABLES)
    else:
        if not state.is_dir():
            raise SystemExit(f"no benchmark state at {state}: pass --state-dir")
        restore(state, cache, a.overwrite)
        for area, folder in AREAS.items():
            if (state / area).is_dir() and a.cache_dir == str(CACHE):
                restore(state / area, folder, a.overwrite)
        if (state / TABLES).is_dir() and a.cache_dir == str(CACHE):
            restore(state / TABLES, default_cache_dir(), a.overwrite)


if __name__ == "__main__":
    main()
