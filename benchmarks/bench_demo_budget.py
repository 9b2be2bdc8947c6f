r"""The demo at an equal budget: the ``cpu`` preset trained eagerly and compiled, side by side.

Two runs of ``examples/fashion_mnist.py --preset cpu`` start at the same moment, each in its own
process with one thread (``OMP_NUM_THREADS=1``), so that they share the machine equally: one
eager, one with ``--compile``. Each trains until its phases' epochs are done or the preset's
14 minutes of training are spent (the compile time is inside the budget: it is spent in the
first steps), then is evaluated by the same code: the test ELBO, the importance-sampled
log-likelihood and FID of the preset's samples. The table gives each run's epochs per phase,
minutes of training, test bits/dim and FID.

Run ``python benchmarks/bench_demo_budget.py`` (about 25 minutes; ``--quick`` for a smoke test
on a few images).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from timing import reported_machine

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fashion_mnist.py"
RUNS = {"eager": [], "compiled": ["--compile"]}


def start(name: str, run_dir: Path, args: argparse.Namespace) -> subprocess.Popen:
    """One demo run in a fresh process with ``args.threads`` threads."""
    command = [sys.executable, str(EXAMPLE), "--preset", "cpu", "--run-dir", str(run_dir)]
    command += [*RUNS[name], "--quiet", *(["--smoke"] if args.quick else [])]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    log = open(run_dir.with_suffix(".log"), "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def row(name: str, run_dir: Path) -> str:
    """The table row of a finished run, from its ``metrics.json`` and ``metrics.jsonl``."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    epochs: dict[str, int] = {}
    seconds = 0.0
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry.get("kind", "epoch") == "epoch" and "phase" in entry:
            epochs[entry["phase"]] = max(epochs.get(entry["phase"], 0), entry["epoch"])
            seconds += entry.get("seconds", 0.0)
    trained = ", ".join(f"{phase} {n}" for phase, n in epochs.items())

    def value(key: str) -> str:
        return f"{metrics[key]:.3f}" if isinstance(metrics.get(key), float) else "—"

    return (
        f"| {name} | {trained} | {seconds / 60:.1f} | {value('test_elbo_bpd')} "
        f"| {value('test_is_bpd')} | {value('fid')} | {value('fid_vae_mean')} |"
    )


def main(args: argparse.Namespace) -> None:
    """Start both runs, wait for them, print the table."""
    with reported_machine(), tempfile.TemporaryDirectory() as folder:
        root = Path(args.keep or folder)
        root.mkdir(parents=True, exist_ok=True)
        print(f"cpu preset, both runs at once, {args.threads} thread(s) each.\n", flush=True)
        processes = {name: start(name, root / name, args) for name in RUNS}
        failed = [name for name, process in processes.items() if process.wait() != 0]
        if failed:
            raise SystemExit(f"run(s) {failed} failed; see {root}/<name>.log (--keep DIR)")
        print(
            "| networks | epochs trained | training minutes | test ELBO bits/dim "
            "| IS bits/dim | FID | FID of the VAE's means |"
        )
        print("|---|---|---:|---:|---:|---:|---:|")
        for name in RUNS:
            print(row(name, root / name))


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke runs on a few images")
    parser.add_argument("--threads", type=int, default=1, help="threads of each run")
    parser.add_argument("--keep", help="keep the runs in this folder (default: a temporary one)")
    return parser


if __name__ == "__main__":
    main(parser().parse_args())
