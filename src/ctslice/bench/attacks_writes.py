"""Attacks on where ctslice writes (issue 15), through the real CLI.

- write paths: `predict --out` (with and without --split-masks / --overwrite) aimed at a dataset subject's CT, a
  mask, its segmentations/ folder, the subject, the dataset root, or DATA/<subject>.nii.gz; `evaluate --out
  --save-predictions` at the cache, a folder inside it, the dataset root or a subject; `cache clean --yes` on a
  folder holding a copied manifest and the user's own files. Survived: predict/evaluate refused with one `error:`
  line and no file of the dataset, cache or earlier run changed or added; clean kept every user file.
- two writers: two `ctslice train` into one --out, the second started at a random moment of the first's run, and
  two `ctslice preprocess` into one cache the same way. Survived: each run either completed or was refused with
  one line naming the other's process (or, for train, the finished run it would replace); the run folder holds
  one run (every checkpoint loads and has the same run id), the cache passes verify.
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

from .attack import PREPROCESS_ARGS, Ran, Tally, Workspace, added, cli, finish, lost, must, snapshot, start

_USER_FILES = {  # what a user keeps in a folder beside a copied manifest, named like cache entries
    "splits.csv": "subject,split\nmine,train\n",
    "label_map.json": '{"0": "background", "1": "my structure"}\n',
    "zarr.json": '{"zarr_format": 3, "node_type": "group", "attributes": {"project": "mine"}}',
    ".staging/notes.txt": "my notes\n",
    "slice_index/notes.txt": "my index\n",
    "notes.txt": "mine\n",
}


def _subjects(data: Path) -> list[str]:
    return sorted(p.name for p in data.iterdir() if (p / "ct.nii.gz").is_file())


def _predict_attack(rng: random.Random, ws: Workspace, ct: Path) -> tuple[list[str], str]:
    sid = rng.choice(_subjects(ws.data))
    mask = rng.choice(sorted((ws.data / sid / "segmentations").glob("*.nii.gz"))).name
    targets = {"DATA/<subject>.nii.gz": ws.data / f"{sid}.nii.gz", "a subject's ct.nii.gz": ws.data / sid / "ct.nii.gz",
               "a ground-truth mask": ws.data / sid / "segmentations" / mask,
               "a segmentations/ folder": ws.data / sid / "segmentations", "a subject's folder": ws.data / sid,
               "a new file in a subject's folder": ws.data / sid / "other_seg.nii.gz", "the dataset root": ws.data}
    where = rng.choice(sorted(targets))
    flags = [f for f in ("--split-masks", "--overwrite") if rng.random() < 0.5]
    if rng.random() < 0.15:  # a CT inside a subject's folder and no --out: the prediction would go beside it
        return ["predict", str(ws.data / sid / "ct.nii.gz"), "--checkpoint", str(ws.checkpoint), "--device", "cpu",
                *flags], f"predict DATA/{sid}/ct.nii.gz (no --out) {' '.join(flags)}"
    return (["predict", str(ct), "--checkpoint", str(ws.checkpoint), "--out", str(targets[where]), "--device", "cpu",
             *flags], f"predict --out {where} {' '.join(flags)}")


def _evaluate_attack(rng: random.Random, ws: Workspace) -> tuple[list[str], str]:
    sid = rng.choice(_subjects(ws.data))
    targets = {"the cache": ws.cache, "cache/subjects/eval": ws.cache / "subjects" / "eval",
               "cache/<new folder>": ws.cache / f"eval-{rng.randrange(1000)}", "the dataset root": ws.data,
               "a dataset subject": ws.data / sid, "DATA/predictions": ws.data / "predictions"}
    where = rng.choice(sorted(targets))
    flags = ["--save-predictions"] + (["--split-masks"] if rng.random() < 0.5 else [])
    return (["evaluate", "--checkpoint", str(ws.checkpoint), "--split", rng.choice(["train", "val"]), "--out",
             str(targets[where]), "--device", "cpu", "--workers", "0", *flags], f"evaluate --out {where}")


def _clean_attack(rng: random.Random, ws: Workspace, n: int) -> tuple[Ran, dict[str, str], Path]:
    folder = ws.root / f"mine-{n}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    shutil.copy(ws.cache / "manifest.json", folder / "manifest.json")
    names = rng.sample(sorted(_USER_FILES), rng.randint(1, len(_USER_FILES)))
    files = {name: _USER_FILES[name] for name in names}
    files[f"subjects/x-{rng.getrandbits(64):016x}/data.txt"] = "my data\n"  # named like a subject's folder
    from ..cache.manifest import read_manifest

    listed = rng.choice(sorted(r.path for r in read_manifest(ws.cache).subjects.values()))
    files[f"{listed}/results.txt"] = "a folder named like a listed subject, but mine\n"
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    before = snapshot(folder)
    before.pop(str(folder / "manifest.json"))  # the bait: a manifest's copy may go with the cache's entries
    return cli(["cache", "clean", str(folder), "--yes"], timeout=120), before, folder


def write_paths(ws: Workspace, rng: random.Random, attacks: int) -> Tally:
    tally = Tally("write paths")
    from ..synthetic import DemoSpec, generate_demo_dataset

    generate_demo_dataset(ws.root / "new", DemoSpec(subjects=1, size=32, slices=(6, 8), seed=99))
    ct = ws.root / "new" / "x.nii.gz"
    shutil.move(ws.root / "new" / "demo0000" / "ct.nii.gz", ct)
    shutil.rmtree(ws.root / "new" / "demo0000")
    for n in range(attacks):
        kind = rng.choice(["predict", "predict", "evaluate", "clean"])
        if kind == "clean":
            ran, before, folder = _clean_attack(rng, ws, n)
            gone = lost(before, snapshot(folder))
            tally.add(ran.rc == 0 and not gone, ran, lost=len(gone),
                      why=f"cache clean on a copied manifest: {len(gone)} user file(s) lost {gone[:3]}")
            continue
        args, what = _predict_attack(rng, ws, ct) if kind == "predict" else _evaluate_attack(rng, ws)
        before = snapshot(ws.data, ws.cache, ws.run)
        ran = cli(args, timeout=180)
        after = snapshot(ws.data, ws.cache, ws.run)
        gone, new = lost(before, after), added(before, after)
        tally.add(ran.refused_in_one_line() and not new, ran, lost=len(gone),
                  why=f"{what}: " + ("not refused in one line" if not ran.refused_in_one_line() else "") +
                      (f" changed {gone[:3]}" if gone else "") + (f" wrote {new[:3]}" if new else ""))
    return tally


def _names(ran: Ran, other_pid: int, what: str) -> bool:
    """A refusal that names the other writer (its pid), or for train the finished run it would replace."""
    return ran.refused_in_one_line() and (f"pid {other_pid} " in ran.text or
                                          (what == "train" and "already holds another training run" in ran.text))


def _pair(first_args: list[str], second_args: list[str], delay: float, timeout: float) -> tuple[Ran, Ran, int, int]:
    first = start(first_args)
    time.sleep(delay)  # a random moment of the first's run: a random timer is the point here
    second = start(second_args)
    a, b = finish(first, timeout), finish(second, timeout)
    return a, b, first.pid, second.pid


def _pair_outcome(a: Ran, b: Ran, pid_a: int, pid_b: int, what: str) -> tuple[bool, str]:
    results = [(a, pid_b), (b, pid_a)]
    if all(r.rc == 0 for r, _ in results):
        return what == "preprocess", "both ran to the end"  # preprocess: one after the other is fine
    if any(r.rc not in (0, 2) for r, _ in results):
        return False, f"exit codes {a.rc} and {b.rc}"
    for r, other in results:
        if r.rc == 2 and not _names(r, other, what):
            return False, "refused without naming the other writer"
    return True, ""


def _add_pair(tally: Tally, ok: bool, a: Ran, b: Ran, gone: int, why: str) -> None:
    tally.add(ok, lost=gone, traceback=a.traceback or b.traceback, hung=a.hung or b.hung,
              why=f"{why} [first rc {a.rc}: {a.tail(200)}] [second rc {b.rc}: {b.tail(200)}]")


def two_writers(ws: Workspace, rng: random.Random, pairs: int) -> Tally:
    tally = Tally("two writers")
    from ..cache.verify import verify_cache
    from ..model.checkpoint import read_checkpoint_dict as load_checkpoint
    from .incremental import modify_subject

    data2, cache2 = ws.root / "data2", ws.root / "cache2"
    shutil.copytree(ws.data, data2)
    must(["preprocess", data2, "--cache", cache2, *PREPROCESS_ARGS])
    refused = 0
    for n in range(pairs):
        out = ws.root / f"two-{n}"
        args = ["train", "--cache", str(ws.cache), "--out", str(out), "--config", str(ws.config), "--epochs", "3"]
        a, b, pid_a, pid_b = _pair(args, args, rng.uniform(0, ws.train_s), timeout=900)
        ok, why = _pair_outcome(a, b, pid_a, pid_b, "train")
        run_ids, problem = set(), ""
        for path in sorted(out.glob("checkpoint_*.pth")):
            try:
                run_ids.add(load_checkpoint(path).get("run_id"))
            except Exception as e:  # noqa: BLE001  (any failure to load is the finding)
                problem = f"{path.name}: {e}"
        if problem or len(run_ids) != 1:
            ok, why = False, why + f" checkpoints: {problem or f'{len(run_ids)} run ids'}"
        refused += 2 in (a.rc, b.rc)
        _add_pair(tally, ok, a, b, 0, f"two trains: {why}")

        for sid in rng.sample(_subjects(data2), 2):
            modify_subject(data2, sid, delta=rng.randint(1, 50))
        before = snapshot(data2)
        args = ["preprocess", str(data2), "--cache", str(cache2), *PREPROCESS_ARGS]
        a, b, pid_a, pid_b = _pair(args, args, rng.uniform(0, 3.0), timeout=300)
        ok, why = _pair_outcome(a, b, pid_a, pid_b, "preprocess")
        report = verify_cache(cache2)
        if not report.ok:
            ok, why = False, why + " verify rejects the cache afterwards"
        refused += 2 in (a.rc, b.rc)
        gone = lost(before, snapshot(data2))
        _add_pair(tally, ok, a, b, len(gone), f"two preprocess: {why}")
    tally.notes.append(f"{refused} of {2 * pairs} pairs overlapped (one refused), the others ran one after the other")
    return tally
