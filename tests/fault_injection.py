"""A fault-injection campaign against ``pyro-vaeflow train``, run as a user would run it.

Each case trains a small ``cpu`` run in a child process and hurts it: ``kill -9`` at a random
moment (some of them inside a checkpoint write, held open by ``PYRO_VAEFLOW_FAULT=pause:...``),
SIGTERM at a random moment, a full disk (``enospc``) in each writer, or a corrupt newest
checkpoint. Then it resumes the run with ``--resume`` until it finishes. A case ends well when the
final weights are bit-identical to an uninterrupted run's and every file of the run reads back
after the fault (no file lost) and a fault that ends the command is reported with a clear
message.

Run the whole campaign (about 15 minutes on 2 cores)::

    .venv/bin/python -m tests.fault_injection --kills 20 --terms 10

The fast subset is in ``tests/test_fault_injection.py``; the whole campaign is its slow test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

TRAIN = ["--train-images", "128", "--batch-size", "16", "--epochs", "vae=2", "--epochs", "glow=2"]
"""A small cpu run: two phases of two epochs, 8 steps an epoch."""

WRITERS = {
    "config.json": "enospc:config.json:0",
    "checkpoint": "enospc:vae.ckpt:1",
    "checkpoint hash": "enospc:glow.ckpt.sha256:1",
    "metrics.jsonl": "enospc:metrics.jsonl:2",
    "model.pt": "enospc:model.pt:0",
}
"""Each writer of ``train`` and the fault that fills the disk under it."""


def command(run_dir: Path, *extra: str) -> list[str]:
    train = [sys.executable, "-m", "pyro_vaeflow", "train", "--run-dir", str(run_dir), "--quiet"]
    return [*train, *TRAIN, *extra]


def start(run_dir: Path, *extra: str, fault: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYRO_VAEFLOW_FAULT", None)
    if fault:
        env["PYRO_VAEFLOW_FAULT"] = fault
    return subprocess.Popen(
        command(run_dir, *extra), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def finish(process: subprocess.Popen) -> tuple[int, str]:
    out = process.communicate(timeout=600)[0].decode()
    return process.returncode, out


def weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "model.pt", weights_only=True)["model"]


def unreadable(run_dir: Path) -> list[str]:
    """The run's files that no longer read back (a file lost)."""
    from pyro_vaeflow.checkpoint import CheckpointError, load_checkpoint

    lost = []
    for path in sorted(run_dir.glob("*")):
        try:
            if path.name.endswith((".ckpt", ".ckpt.prev", ".pt")):
                load_checkpoint(path)
            elif path.suffix == ".json":
                json.loads(path.read_text())
        except (CheckpointError, ValueError):
            lost.append(path.name)
    log = run_dir / "metrics.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    for line in lines[:-1]:  # a last line cut short by a kill is expected, and skipped
        try:
            json.loads(line)
        except ValueError:
            lost.append("metrics.jsonl")
            break
    return lost


@dataclass
class Outcome:
    """How one case ended."""

    case: str
    well: bool
    lost: list[str]
    note: str
    missed: bool = False  # the fault came after the run had written its model


def resume_to_the_end(run_dir: Path, reference: dict, case: str, note: str, lost) -> Outcome:
    status, out = finish(start(run_dir, "--resume"))
    if status != 0:
        return Outcome(case, False, lost, f"{note}; the resume failed ({status}): {out[-300:]}")
    found = weights(run_dir)
    same = all(torch.equal(value, found[name]) for name, value in reference.items())
    return Outcome(case, same and not lost, lost, note + ("" if same else "; weights differ"))


def kill_case(run_dir: Path, reference: dict, seconds: float) -> Outcome:
    process = start(run_dir)
    time.sleep(seconds)
    process.kill()
    status, _ = finish(process)
    note = f"kill -9 after {seconds:.1f} s" + (" (it had finished)" if status == 0 else "")
    finished = (run_dir / "model.pt").exists()
    outcome = resume_to_the_end(run_dir, reference, "kill -9", note, unreadable(run_dir))
    outcome.missed = finished
    return outcome


def kill_in_write_case(run_dir: Path, reference: dict, which: str) -> Outcome:
    process = start(run_dir, fault=f"pause:{which}:30")
    while process.poll() is None and not list(run_dir.glob(f".{which}.*.tmp")):
        time.sleep(0.05)  # the bytes are written, the file is not yet in place
    process.kill()
    finish(process)
    note = f"kill -9 inside the write of {which}"
    return resume_to_the_end(run_dir, reference, "kill -9 in a write", note, unreadable(run_dir))


def term_case(run_dir: Path, reference: dict, seconds: float) -> Outcome:
    process = start(run_dir)
    time.sleep(seconds)
    process.terminate()
    status, out = finish(process)
    note = f"SIGTERM after {seconds:.1f} s: exit {status}"
    told = status == 128 + signal.SIGTERM and "Resume with: pyro-vaeflow train" in out
    if status not in (0, 128 + signal.SIGTERM, -signal.SIGTERM) or (status == 143 and not told):
        return Outcome("SIGTERM", False, [], f"{note}: {out[-300:]}")
    finished = (run_dir / "model.pt").exists()
    outcome = resume_to_the_end(run_dir, reference, "SIGTERM", note, unreadable(run_dir))
    outcome.missed = finished
    return outcome


def disk_full_case(run_dir: Path, reference: dict, writer: str) -> Outcome:
    status, out = finish(start(run_dir, fault=WRITERS[writer]))
    told = status == 1 and "No space left on device" in out and "resume with" in out
    note = f"disk full in {writer}: exit {status}"
    if not told:
        return Outcome("disk full", False, [], f"{note}: {out[-300:]}")
    return resume_to_the_end(run_dir, reference, "disk full", note, unreadable(run_dir))


def corrupt_case(run_dir: Path, reference: dict, how: str) -> Outcome:
    status, out = finish(start(run_dir, "--epochs", "glow=0"))  # the first phase only
    assert status == 0, out
    newest = run_dir / "vae.ckpt"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 3] if how == "truncated" else data[:-64] + bytes(64))
    status, out = finish(start(run_dir, "--resume"))
    warned = status == 0 and "vae.ckpt" in out and "from the previous checkpoint" in out
    outcome = resume_to_the_end(run_dir, reference, "corrupt checkpoint", f"{how} vae.ckpt", [])
    if not warned:
        return Outcome(outcome.case, False, [], f"{outcome.note}; no warning: {out[-300:]}")
    return outcome


def campaign(kills: int, terms: int, seed: int = 0, log: Callable[[str], None] = print) -> list:
    """Run the cases; one :class:`Outcome` each."""
    root = Path(tempfile.mkdtemp(prefix="faults-"))
    try:
        began = time.perf_counter()
        status, out = finish(start(root / "reference"))
        assert status == 0, out
        duration, reference = time.perf_counter() - began, weights(root / "reference")
        draw = random.Random(seed)
        cases: list[tuple[Callable, object]] = []
        moment = (0.5, 0.8 * duration)  # before the end, on a machine as busy as at the start
        cases += [(kill_case, draw.uniform(*moment)) for _ in range(max(kills - 4, 0))]
        cases += [(kill_in_write_case, w) for w in ("vae.ckpt", "glow.ckpt", "model.pt")][:kills]
        cases += [(kill_in_write_case, "vae.ckpt.sha256")][: max(kills - 3, 0)]
        cases += [(term_case, draw.uniform(*moment)) for _ in range(terms)]
        cases += [(disk_full_case, writer) for writer in WRITERS]
        cases += [(corrupt_case, how) for how in ("truncated", "overwritten")]
        outcomes = []
        for index, (case, argument) in enumerate(cases):
            outcome = case(root / f"case{index}", reference, argument)
            log(f"{'ok  ' if outcome.well else 'FAIL'} {outcome.case}: {outcome.note}")
            outcomes.append(outcome)
            shutil.rmtree(root / f"case{index}", ignore_errors=True)
        return outcomes
    finally:
        shutil.rmtree(root, ignore_errors=True)


def summary(outcomes: list[Outcome]) -> str:
    """A table of the counts per kind of case."""
    rows = [
        "| case | tried | came after model.pt | ended well | files lost |",
        "|---|---|---|---|---|",
    ]
    kinds = [*dict.fromkeys(outcome.case for outcome in outcomes), None]
    for case in kinds:
        mine = [o for o in outcomes if case is None or o.case == case]
        missed, well = sum(o.missed for o in mine), sum(o.well for o in mine)
        lost = sum(len(o.lost) for o in mine)
        name = "**all**" if case is None else case
        rows.append(f"| {name} | {len(mine)} | {missed} | {well} | {lost} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="kill -9 cases")
    parser.add_argument("--terms", type=int, default=10, help="SIGTERM cases")
    parser.add_argument("--seed", type=int, default=0, help="seeds the random moments")
    args = parser.parse_args()
    print(summary(campaign(args.kills, args.terms, args.seed)))


if __name__ == "__main__":
    main()
