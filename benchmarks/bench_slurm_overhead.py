"""What the slurm profile costs over the laptop: the demo study under both, in one run.

The demo study (the study file of the SLURM end-to-end tests: ``seeds/studies/demo.yaml`` at
``--persons`` synthetic persons) runs end to end from an empty folder, once under
``profiles/laptop`` and once under ``profiles/slurm`` with the test cluster's polling
(``tests/harness/slurm-test-profile``), as tests/test_e2e.py runs them.  The cluster is the
test suite's (``tests/harness/slurm.py``: three nodes where namespaces work; its state in
``$COHORTFLOW_SLURM_DIR``), started and stopped here, unless ``--slurm-conf`` names one
that is up.  ``--repeats N`` alternates the two profiles N times (the machine may be shared:
the load average at the start of each run is printed).

Printed per run: wall seconds, sbatch submissions, and for the slurm run where its time went,
from the controller's log and the run's own output (timestamped as it is read):

* ``queued``  -- seconds from sbatch to the job's start, summed over jobs;
* ``in jobs`` -- seconds in which at least one SLURM job was running (union of the jobs'
  start..end), and ``steps``, the Snakemake processes those jobs started (one per job, one
  more per rule run inside it: the ``srun`` steps);
* ``noticed`` -- seconds in which a job had ended and the run had not yet printed the next
  job-finished line (the executor's status polling; union over jobs, like ``in jobs``);
* ``outside`` -- wall seconds in which no SLURM job ran (start-up, the DAG, local rules,
  polling).

Then the ratio slurm / laptop of each pair, and whether the two runs' cohort tables, labels
and tensors are byte-identical and their test metrics equal to 1e-9 (``tests/helpers.py``'s
``digests``, as the profile-invariance tests compare them).  Times are printed, never checked.

    python benchmarks/bench_slurm_overhead.py                     # 20000 persons, one pair
    python benchmarks/bench_slurm_overhead.py --repeats 2 --keep /tmp/overhead
    python benchmarks/bench_slurm_overhead.py --slurm-conf /tmp/slurm2/etc/slurm.conf
    python benchmarks/bench_slurm_overhead.py --slurm-args '--group-components cohort=1'
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from cohortflow.layout import Layout  # noqa: E402
from tests.helpers import DEMO_ANALYSIS, PERSONS, digests, write_study  # noqa: E402

#: Snakemake's line for one submission (a group of jobs counts once).
SUBMITTED = re.compile(r"Job \S+ has been submitted with SLURM jobid (\d+)")
#: What the controller logs at submission, start and end of a job.
CTLD_EVENTS = {
    "submit": re.compile(r"^\[(\S+)\] _slurm_rpc_submit_batch_job: JobId=(\d+) "),
    "start": re.compile(r"^\[(\S+)\] sched: Allocate JobId=(\d+) "),
    "end": re.compile(r"^\[(\S+)\] _job_complete: JobId=(\d+) done"),
}
STEP = re.compile(r"launch task StepId=(\d+)\.\d+ ")


def profile_args(profile: str) -> list[str]:
    """Snakemake's profile options of a run, as tests/test_e2e.py gives them."""
    args = ["--workflow-profile", str(REPO / "profiles" / profile)]
    if profile == "slurm":
        args += ["--profile", str(REPO / "tests" / "harness" / "slurm-test-profile")]
    return args


def run(profile: str, study: Path, workdir: Path, env: dict[str, str], extra: list[str]
        ) -> tuple[float, list[tuple[float, str]]]:
    """Run the study under ``profile`` in ``workdir`` (``extra``: more Snakemake options);
    its wall seconds and its output lines, each with the epoch second it was read."""
    command = [sys.executable, "-m", "snakemake", *profile_args(profile), *extra,
               "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--config", f"study={study}", "results=results", f"profile={profile}"]
    start = time.time()
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = [(time.time(), line.rstrip("\n")) for line in proc.stdout]
    wall = time.time() - start
    if proc.wait() != 0:
        sys.exit(f"{profile} run failed:\n" + "\n".join(line for _, line in lines[-60:]))
    return wall, lines


def controller_times(log: Path) -> dict[int, dict[str, float]]:
    """Per SLURM job id: epoch seconds of its submission, start and end (controller log)."""
    times: dict[int, dict[str, float]] = {}
    for line in log.read_text(errors="replace").splitlines():
        for event, pattern in CTLD_EVENTS.items():
            match = pattern.match(line)
            if match:
                stamp = datetime.fromisoformat(match[1]).timestamp()  # local time, as logged
                times.setdefault(int(match[2]), {})[event] = stamp
    return times


def steps_of(logs: list[Path]) -> dict[int, int]:
    """Per SLURM job id, the ``srun`` steps its nodes launched."""
    steps: dict[int, int] = {}
    for log in logs:
        for match in STEP.finditer(log.read_text(errors="replace")):
            steps[int(match[1])] = steps.get(int(match[1]), 0) + 1
    return steps


def union_seconds(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one of ``spans``.

    >>> union_seconds([(0, 2), (1, 3), (5, 6)])
    4.0
    """
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def slurm_breakdown(lines: list[tuple[float, str]], wall: float, log_dir: Path
                    ) -> dict[str, float]:
    """Where the slurm run's time went (see the module docstring)."""
    ids = [int(m[1]) for _, line in lines for m in [SUBMITTED.search(line)] if m]
    ctld = controller_times(log_dir / "slurmctld.log")
    steps = steps_of(sorted(log_dir.glob("slurmd*.log")))
    finished = [stamp for stamp, line in lines if line.startswith("Finished jobid")]
    queued = 0.0
    spans, waits = [], []
    for job in ids:
        times = ctld.get(job, {})
        if not {"submit", "start", "end"} <= times.keys():
            continue
        queued += times["start"] - times["submit"]
        spans.append((times["start"], times["end"]))
        later = [stamp for stamp in finished if stamp >= times["end"]]
        if later:
            waits.append((times["end"], later[0]))
    running = union_seconds(spans)
    return {"jobs": len(ids), "steps": len(ids) + sum(steps.get(j, 0) for j in ids),
            "queued": queued, "in_jobs": running, "noticed": union_seconds(waits),
            "outside": wall - running}


def same_results(slurm: Path, laptop: Path) -> bool:
    """Cohort tables, labels and tensors byte for byte, test metrics to 1e-9."""
    if digests(slurm) != digests(laptop):
        return False
    a, b = (json.loads(Layout(r).model_metrics(DEMO_ANALYSIS).read_text())["test"]
            for r in (slurm, laptop))
    return all(abs(a[key] - value) <= 1e-9 for key, value in b.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=PERSONS)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="run here and keep the results")
    parser.add_argument("--slurm-conf", type=Path,
                        help="slurm.conf of a test cluster that is up (default: start one)")
    parser.add_argument("--slurm-args", default="",
                        help="more Snakemake options for the slurm run, to try a setting "
                             "(e.g. '--group-components cohort=4'); they beat the profiles")
    args = parser.parse_args()
    os.environ.setdefault("COHORTFLOW_PSEUDONYM_KEY", "cohortflow-benchmark-key")
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_slurm_overhead_"))
    root.mkdir(parents=True, exist_ok=True)
    study = write_study(root / "study.yaml", source__synth__persons=args.persons)

    cluster = None
    if args.slurm_conf is None:
        from tests.harness.slurm import make_cluster
        cluster, how = make_cluster()
        cluster.start()
        conf, log_dir = cluster.conf_path, cluster.log_dir
        print(f"SLURM test cluster: {how}, in {cluster.base_dir}")
    else:
        conf, log_dir = args.slurm_conf, args.slurm_conf.parents[1] / "log"
    env = {**os.environ, "SLURM_CONF": str(conf), "PYTHONPATH": os.pathsep.join(
        [str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    print(f"demo study, {args.persons} persons; {os.cpu_count()} CPUs")
    header = (f"{'run':>3} {'profile':<7} {'load':>5} {'wall s':>7} {'sbatch':>6} "
              f"{'steps':>5} {'queued':>6} {'in jobs':>7} {'noticed':>7} {'outside':>7}")
    rows: list[str] = []
    ratios: list[tuple[float, bool]] = []
    try:
        for repeat in range(args.repeats):
            walls, results = {}, {}
            for profile in ("laptop", "slurm"):
                load = os.getloadavg()[0]
                workdir = root / f"{profile}-{repeat}"
                extra = shlex.split(args.slurm_args) if profile == "slurm" else []
                wall, lines = run(profile, study, workdir, env, extra)
                walls[profile], results[profile] = wall, workdir / "results" / "demo"
                row = f"{repeat:>3} {profile:<7} {load:>5.1f} {wall:>7.1f} "
                if profile == "slurm":
                    b = slurm_breakdown(lines, wall, log_dir)
                    row += (f"{b['jobs']:>6} {b['steps']:>5} {b['queued']:>6.1f} "
                            f"{b['in_jobs']:>7.1f} {b['noticed']:>7.1f} {b['outside']:>7.1f}")
                else:
                    row += f"{0:>6} {'-':>5} {'-':>6} {'-':>7} {'-':>7} {'-':>7}"
                rows.append(row)
                print(row, flush=True)
            ratios.append((walls["slurm"] / walls["laptop"],
                           same_results(results["slurm"], results["laptop"])))
    finally:
        if cluster is not None:
            cluster.stop()
    print()
    print(header)
    print("\n".join(rows))
    for repeat, (ratio, same) in enumerate(ratios):
        print(f"run {repeat}: slurm / laptop = {ratio:.2f}; results identical: "
              f"{'yes' if same else 'NO'}")
    print(f"(results in {root})")


if __name__ == "__main__":
    main()
