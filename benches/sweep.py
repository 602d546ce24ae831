#!/usr/bin/env python3
"""Run smarm's criterion suite against tokio, check for regressions, sweep the preemption knobs.

The suite is `benches/general.rs`, run with `cargo bench --bench general`. Every bench is a criterion
group named after the bench whose benchmark ids end in `<runtime>/<config>`, for example
`chained_spawn/smarm/st`, `chained_spawn/tokio/st`, `mpsc_contention/unbounded/smarm/mt`,
`multi_thread_scaling/tokio/t2`, `switch/raw_floor/st`. The last path component is the config, the
one before it the runtime, everything before that the bench. smarm is paired with tokio for the same
bench and config; the figure of merit is the ratio smarm / tokio of the medians (below 1.0 = smarm
faster). A runtime other than smarm and tokio (such as `raw_floor`) has no tokio twin and is shown
as information: smarm's median as a multiple of it.

Commands (run from any directory; `python3 sweep.py ...` at the repo root is the same):

    python3 benches/sweep.py run                    # run the suite once, print the table
    python3 benches/sweep.py run --quick            # criterion --quick, short warm-up/measurement
    python3 benches/sweep.py run --filter NAME      # only benches whose id matches NAME (criterion filter)
    python3 benches/sweep.py run --json FILE        # also write {"<bench>/<config>": {...}} to FILE
    python3 benches/sweep.py run --save-baseline    # store the results in benches/.baseline.json
    python3 benches/sweep.py regress                # re-run; exit 1 if a ratio got >10% worse
    python3 benches/sweep.py sweep                  # run the suite at every point of SWEEP_GRID
    python3 benches/sweep.py sweep --grid seed      # 10 points: default, each knob alone, 2 mixed
    python3 benches/sweep.py sweep --save-csv results.csv
    python3 benches/sweep.py sweep --plot sweep.png # heatmap per bench (needs matplotlib)

Arguments after `--` go to criterion unchanged, e.g. `run -- --noplot` or `run -- --sample-size 20`.
`--manifest-dir DIR` runs the suite of another crate (default: this repository's root).

Where the numbers come from: after `cargo bench` returns, the median of each benchmark is read from
`<criterion dir>/<id>/new/estimates.json` (`median.point_estimate`, ns); the benchmark's id is taken
from `benchmark.json` beside it, since criterion's directory names replace `/` with `_`. The criterion
dir is `$CRITERION_HOME`, else `$CARGO_TARGET_DIR/criterion`, else cargo's target directory +
`/criterion`, as criterion itself decides. Only ids that this run printed, and files written during
it, are used. If a benchmark has no estimates.json, the `time: [low estimate high]` line that
criterion printed is used instead; that middle value is criterion's typical estimate (slope or mean),
not the median, so the JSON of such a run says `"source": "stdout"` for it.

Paired benches: a compute-bound bench sits at parity, where the machine's speed drifting between
two criterion benchmarks would decide its ratio, and a bench whose speed swings with the machine
for seconds at a time (deep_recursion; many_timers, whose first runs of 10,000 actors are memory
bound) can have one runtime timed in a slow spell and the other not. general.rs therefore times each sample of such a
bench's smarm and tokio benchmarks together with as many runs of the other runtime right after it
and prints the medians of those interleaved samples and of their ratios as `paired: <bench>/<config>
smarm <ns> ns tokio <ns> ns ratio <r> (<n> pairs)`. Those replace criterion's medians and their ratio
for that bench and config (the JSON says `"source": "paired"`, the table notes `paired`); the
median of the pairs' ratios is what machine noise moves least. `switch` is paired with its reference
the same way (`paired: switch/st smarm <ns> ns raw_floor <ns> ns ratio <r> (<n> pairs)`): its ratio
to the raw floor is then the median of the pairs' ratios too.

Regressions: `run --save-baseline` stores the results; `regress` runs the suite again and, for every
bench present in both, computes change = (ratio now / ratio in baseline - 1) * 100 on the
smarm / tokio ratio (so the speed of the machine cancels out). A change above
REGRESSION_THRESHOLD_PCT is a regression (exit 1), a change below -REGRESSION_THRESHOLD_PCT an
improvement; exactly the threshold is not a regression. Benches missing on either side are listed,
not failed.

Sweep: each point of the grid runs the whole suite with SMARM_ALLOC_INTERVAL and
SMARM_TIMESLICE_CYCLES set; for each bench the report gives, per point, how far smarm's median is from
its median at the default point (128, 300_000), in percent, and the ratio vs tokio at that point.

Exit status: 0 fine, 1 regression found, 2 usage error / missing baseline / no results / no
matplotlib, 3 `cargo bench` failed, 130 interrupted.

Only the standard library is used, except matplotlib, imported by `sweep --plot` alone.
"""

import argparse
import csv
import io
import json
import math
import os
import queue
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# A ratio (smarm / tokio) more than this many percent above the baseline's is a regression.
REGRESSION_THRESHOLD_PCT = 10

# The runtime's defaults, from which every sweep point is measured.
DEFAULT_ALLOC_INTERVAL = 128
DEFAULT_TIMESLICE_CYCLES = 300_000
DEFAULT_POINT = (DEFAULT_ALLOC_INTERVAL, DEFAULT_TIMESLICE_CYCLES)

ALLOC_INTERVALS = (32, 64, 128, 256, 512)
TIMESLICE_CYCLES = (150_000, 300_000, 600_000, 1_200_000)

# Every (alloc_interval, timeslice_cycles) pair, the default point first.
SWEEP_GRID = [DEFAULT_POINT] + [
    (a, t) for a in ALLOC_INTERVALS for t in TIMESLICE_CYCLES if (a, t) != DEFAULT_POINT
]

# The earlier harness's 10 points: the default, each knob varied alone, and the two mixed points
# its tuning table recommends (strict fairness 64 x 150k, long compute batches 256 x 600k).
SEED_GRID = (
    [DEFAULT_POINT]
    + [(a, DEFAULT_TIMESLICE_CYCLES) for a in ALLOC_INTERVALS if a != DEFAULT_ALLOC_INTERVAL]
    + [(DEFAULT_ALLOC_INTERVAL, t) for t in TIMESLICE_CYCLES if t != DEFAULT_TIMESLICE_CYCLES]
    + [(64, 150_000), (256, 600_000)]
)

GRIDS = {"full": SWEEP_GRID, "seed": SEED_GRID}

ENV_ALLOC_INTERVAL = "SMARM_ALLOC_INTERVAL"
ENV_TIMESLICE_CYCLES = "SMARM_TIMESLICE_CYCLES"

BENCH_TARGET = "general"
QUICK_WARM_UP_S = "0.5"
QUICK_MEASUREMENT_S = "1"

REPO_ROOT = Path(__file__).resolve().parent.parent
BASELINE_NAME = Path("benches") / ".baseline.json"

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, EXIT_CARGO, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class HarnessError(Exception):
    """A failure to report in one line and exit with `code`."""

    def __init__(self, message, code=EXIT_USAGE):
        super().__init__(message)
        self.code = code


# ----------------------------------------------------------------------------------------------
# Units

NS_PER_UNIT = {
    "ps": 1e-3,
    "ns": 1.0,
    "\u00b5s": 1e3,  # MICRO SIGN, what criterion prints
    "\u03bcs": 1e3,  # GREEK SMALL LETTER MU
    "us": 1e3,
    "ms": 1e6,
    "s": 1e9,
}


def to_ns(value, unit):
    """`value` in `unit` (ps, ns, µs, us, ms, s) as nanoseconds."""
    try:
        return float(value) * NS_PER_UNIT[unit]
    except KeyError:
        raise ValueError(f"unknown time unit {unit!r}") from None


def format_ns(ns):
    """A duration in ns with a human unit and three significant digits: '8.63 ms'."""
    if ns is None or (isinstance(ns, float) and math.isnan(ns)):
        return "-"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("\u00b5s", 1e3), ("ns", 1.0)):
        if abs(ns) >= scale:
            return f"{_three_digits(ns / scale)} {unit}"
    if ns == 0:
        return "0 ns"
    return f"{_three_digits(ns * 1e3)} ps"


def _three_digits(x):
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def format_ratio(r):
    if r is None:
        return "-"
    if r >= 100:
        return f"{r:.0f}"
    if r >= 10:
        return f"{r:.1f}"
    if r >= 0.1:
        return f"{r:.2f}"
    return f"{r:.3f}"


def format_pct(p):
    if p is None:
        return "-"
    if abs(p) < 0.05:
        return "0.0%"
    return f"{p:+.1f}%"


def format_duration(seconds):
    """Elapsed or remaining wall time: '45s', '3m07s', '1h02m'."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def format_cycles(t):
    """Timeslice cycles in short form: 150k, 1.2M."""
    if t >= 1_000_000:
        return f"{t / 1_000_000:g}M"
    if t >= 1_000:
        return f"{t / 1_000:g}k"
    return str(t)


# ----------------------------------------------------------------------------------------------
# Benchmark ids

def split_id(bench_id):
    """Split a criterion id into (bench, runtime, config).

    'chained_spawn/smarm/st' -> ('chained_spawn', 'smarm', 'st');
    'mpsc_contention/unbounded/smarm/st' -> ('mpsc_contention/unbounded', 'smarm', 'st').
    Ids with fewer parts degrade: 'a/b' -> ('a', 'b', ''), 'a' -> ('a', '', '').
    """
    parts = bench_id.strip().strip("/").split("/")
    if len(parts) >= 3:
        return "/".join(parts[:-2]), parts[-2], parts[-1]
    if len(parts) == 2:
        return parts[0], parts[1], ""
    return parts[0], "", ""


# ----------------------------------------------------------------------------------------------
# Criterion's output

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_UNIT = r"(ps|ns|\u00b5s|\u03bcs|us|ms|s)"
_NUM = r"([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)"
_TIME_LINE = re.compile(
    r"^(?P<prefix>.*?)\btime:\s*\[\s*" + _NUM + r"\s*" + _UNIT + r"\s+" + _NUM + r"\s*" + _UNIT
    + r"\s+" + _NUM + r"\s*" + _UNIT + r"\s*\]"
)
_BENCHMARKING = re.compile(
    r"^Benchmarking (?P<id>.+?)(?:: (?:Warming up|Collecting|Analyzing|Profiling|Complete)\b.*)?$"
)
# Unindented lines that criterion or cargo print and that are never a benchmark id.
_NOT_AN_ID = re.compile(
    r"^(Benchmarking |Found \d+ outliers|Warning:|WARNING:|Gnuplot|Running |running \d|test |"
    r"Testing |Success|Compiling |Finished |Executable |Blocking |Downloaded |change:|thrpt:|"
    r"No change|Change within|Performance has)"
)


# general.rs's line with the medians of a paired bench's interleaved samples (see the docstring).
# The second runtime is tokio, or a reference such as raw_floor.
PAIRED_LINE = re.compile(
    r"^paired: (?P<key>\S+) smarm (?P<smarm>" + _NUM + r") ns (?P<other>[A-Za-z_]\w*) (?P<theirs>"
    + _NUM + r") ns ratio (?P<ratio>" + _NUM + r") \((?P<pairs>\d+) pairs\)$"
)


def strip_ansi(line):
    return _ANSI.sub("", line)


def benchmarking_id(line):
    """The id in a 'Benchmarking <id>[: phase]' progress line, else None."""
    m = _BENCHMARKING.match(strip_ansi(line).strip())
    return m.group("id").strip() if m else None


def parse_criterion_stdout(text):
    """Map each benchmark id in criterion's output to the middle value of its `time:` line, in ns.

    Handles both layouts criterion uses (id and `time:` on one line; a long id alone on the line
    before an indented `time:`), every unit, any spacing, and ignores the `change:` block (its
    `time:` line holds percentages). Where the id cannot be read from the lines above, the id of the
    last 'Benchmarking <id>' line is used. First measurement of an id wins.
    """
    results = {}
    previous = ""  # last non-blank line, to find an id printed alone
    last_benchmarking = None
    for raw in text.splitlines():
        line = strip_ansi(raw).rstrip()
        if not line.strip():
            continue
        bid = benchmarking_id(line)
        if bid is not None:
            last_benchmarking = bid
            previous = line
            continue
        m = _TIME_LINE.match(line)
        if m:
            prefix = m.group("prefix").strip()
            if prefix:
                bench_id = prefix
            elif previous and not previous[0].isspace() and not _NOT_AN_ID.match(previous):
                bench_id = previous.strip()
            else:
                bench_id = last_benchmarking
            if bench_id and bench_id not in results:
                results[bench_id] = to_ns(m.group(4), m.group(5))
        previous = line
    return results


def read_estimates(criterion_dir, since=None):
    """Map benchmark id -> median ns from every `<criterion_dir>/**/new/estimates.json`.

    The id is `full_id` from `benchmark.json` beside it; failing that, the directory path relative
    to `criterion_dir` (criterion turns `/` inside a name into `_`, so that is a best effort). With
    `since` (a time.time() value), files last written before it are skipped as stale.
    """
    root = Path(criterion_dir)
    results = {}
    if not root.is_dir():
        return results
    for est in sorted(root.glob("**/new/estimates.json")):
        if since is not None and est.stat().st_mtime < since:
            continue
        try:
            median = float(json.loads(est.read_text())["median"]["point_estimate"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        bench_id = None
        meta = est.parent / "benchmark.json"
        if meta.is_file():
            try:
                bench_id = json.loads(meta.read_text()).get("full_id")
            except (OSError, ValueError, AttributeError):
                bench_id = None
        if not bench_id:
            bench_id = est.parent.parent.relative_to(root).as_posix()
        results[bench_id] = median
    return results


def parse_paired(lines):
    """Read general.rs's 'paired:' lines: ({"<bench>/smarm/<config>": ns, "<bench>/<other>/<config>":
    ns}, {"<bench>/<config>": ratio}), in order; a later line for the same key wins. <other> is
    tokio, or a reference such as raw_floor (whose ratio becomes the row's reference ratio)."""
    medians, ratios = {}, {}
    for raw in lines:
        m = PAIRED_LINE.match(strip_ansi(raw).strip())
        if not m:
            continue
        bench, _, config = m.group("key").rpartition("/")
        if not bench:
            continue
        medians[f"{bench}/smarm/{config}"] = float(m.group("smarm"))
        medians[f"{bench}/{m.group('other')}/{config}"] = float(m.group("theirs"))
        ratios[m.group("key")] = float(m.group("ratio"))
    return medians, ratios


def apply_paired(medians, sources, paired_medians):
    """Replace medians with the paired ones, in place (source "paired"); an id criterion did not
    run (a filter that kept only one side) is added."""
    for bench_id, ns in paired_medians.items():
        medians[bench_id] = ns
        sources[bench_id] = "paired"


def merge_medians(ordered_ids, from_estimates, from_stdout):
    """Medians for the ids this run printed: estimates.json first, stdout as fallback.

    Returns (medians, sources), both keyed by id in the order given. When the run printed no id at
    all, every estimate passed in is used (the caller has already dropped stale files).
    """
    medians, sources = {}, {}
    ids = list(ordered_ids) or sorted(from_estimates)
    for bench_id in ids:
        if bench_id in from_estimates:
            medians[bench_id], sources[bench_id] = from_estimates[bench_id], "estimates"
        elif bench_id in from_stdout:
            medians[bench_id], sources[bench_id] = from_stdout[bench_id], "stdout"
    return medians, sources


# ----------------------------------------------------------------------------------------------
# Pairing smarm with tokio

@dataclass
class Row:
    """One bench + config: smarm's median beside tokio's (or beside a reference such as raw_floor)."""

    bench: str
    config: str
    runtimes: dict = field(default_factory=dict)  # runtime -> median ns
    # A paired bench's ratio: the median of its pairs' ratios, which the medians' ratio only
    # approximates.
    paired_ratio: float = None
    # The same for a bench paired with its reference (switch against raw_floor).
    paired_reference_ratio: float = None

    @property
    def key(self):
        return f"{self.bench}/{self.config}" if self.config else self.bench

    def ids(self):
        """The benchmark ids this row was built from."""
        return [f"{self.bench}/{rt}/{self.config}" if self.config else f"{self.bench}/{rt}"
                for rt in self.runtimes]

    @property
    def smarm_ns(self):
        return self.runtimes.get("smarm")

    @property
    def tokio_ns(self):
        return self.runtimes.get("tokio")

    @property
    def ratio(self):
        if self.paired_ratio is not None:
            return self.paired_ratio
        return _ratio(self.smarm_ns, self.tokio_ns)

    @property
    def reference(self):
        """The first runtime that is neither smarm nor tokio, e.g. 'raw_floor', or None."""
        return next((r for r in self.runtimes if r not in ("smarm", "tokio")), None)

    @property
    def reference_ns(self):
        ref = self.reference
        return self.runtimes[ref] if ref else None

    @property
    def reference_ratio(self):
        if self.paired_reference_ratio is not None:
            return self.paired_reference_ratio
        return _ratio(self.smarm_ns, self.reference_ns)


def _ratio(a, b):
    if a is None or b is None or b <= 0:
        return None
    return a / b


def pair_results(medians, paired_ratios=None):
    """Group {id: ns} into Rows by (bench, config), in order of first appearance; a paired bench's
    ratio comes from paired_ratios ({"<bench>/<config>": ratio})."""
    rows = {}
    for bench_id, ns in medians.items():
        bench, runtime, config = split_id(bench_id)
        row = rows.setdefault((bench, config), Row(bench, config))
        row.runtimes.setdefault(runtime or "?", ns)
    for row in rows.values():
        r = (paired_ratios or {}).get(row.key)
        if row.tokio_ns is None and row.reference:
            row.paired_reference_ratio = r
        else:
            row.paired_ratio = r
    return list(rows.values())


def rows_to_json(rows, sources=None):
    """{"<bench>/<config>": {"smarm_ns", "tokio_ns", "ratio"[, "reference", "reference_ns",
    "reference_ratio"][, "source"]}}."""
    out = {}
    for row in rows:
        entry = {"smarm_ns": row.smarm_ns, "tokio_ns": row.tokio_ns, "ratio": row.ratio}
        if row.reference:
            entry["reference"] = row.reference
            entry["reference_ns"] = row.reference_ns
            entry["reference_ratio"] = row.reference_ratio
        source = row_source(row, sources)
        if source:
            entry["source"] = source
        out[row.key] = entry
    return out


def row_source(row, sources):
    """"stdout" when any of the row's medians came from criterion's printed estimate, "paired" when
    they are the medians of interleaved samples, None for criterion's estimates.json."""
    found = {sources.get(i) for i in row.ids()} if sources else set()
    return next((s for s in ("stdout", "paired") if s in found), None)


def primary_ratio(entry):
    """The ratio a regression check compares: vs tokio, else vs the reference (raw_floor)."""
    if not entry:
        return None
    r = entry.get("ratio")
    return r if r is not None else entry.get("reference_ratio")


def format_table(rows, sources=None):
    """The run's table: bench, config, smarm, tokio, smarm/tokio, and a note (SLOWER; paired when
    the medians are those of interleaved samples, see PAIRED_LINE)."""
    header = ("bench", "config", "smarm", "tokio", "smarm/tokio", "")
    lines = []
    for row in rows:
        note = ""
        if row.ratio is not None and row.ratio > 1.0:
            note = "SLOWER"
        if row_source(row, sources) == "paired":
            note = f"{note} paired".strip()
        if row.reference:
            info = (f"info: {format_ratio(row.reference_ratio)}x {row.reference}"
                    f" ({format_ns(row.reference_ns)})")
            note = f"{note}  {info}".strip()
        elif row.smarm_ns is None:
            note = "no smarm result"
        elif row.tokio_ns is None:
            note = "no tokio result"
        lines.append((row.bench, row.config, format_ns(row.smarm_ns), format_ns(row.tokio_ns),
                      format_ratio(row.ratio), note))
    table = _columns([header] + lines, right=(2, 3, 4))
    paired = [r.ratio for r in rows if r.ratio is not None]
    if paired:
        faster = sum(1 for r in paired if r < 1.0)
        slower = sum(1 for r in paired if r > 1.0)
        geo = math.exp(sum(math.log(r) for r in paired) / len(paired))
        table += (f"\n{len(paired)} pairs: smarm faster in {faster}, slower in {slower}; "
                  f"geometric mean smarm/tokio {format_ratio(geo)}")
    return table


def _columns(rows, right=()):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    out = []
    for n, r in enumerate(rows):
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths))]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# Baseline and regressions

@dataclass
class Change:
    key: str
    status: str  # regressed | improved | ok | missing | new | no-ratio
    base_ratio: float = None
    ratio: float = None
    change_pct: float = None


def compare(baseline, current, threshold_pct=REGRESSION_THRESHOLD_PCT):
    """Compare two results dicts ({key: entry}) on their ratios; a list of Change, baseline order.

    change_pct = (ratio / base_ratio - 1) * 100, rounded to 1e-9 so that a change of exactly the
    threshold counts as within it. > threshold: regressed; < -threshold: improved.
    """
    changes = []
    for key, base in baseline.items():
        if key not in current:
            changes.append(Change(key, "missing", primary_ratio(base)))
            continue
        b, c = primary_ratio(base), primary_ratio(current[key])
        if b is None or c is None or b <= 0:
            changes.append(Change(key, "no-ratio", b, c))
            continue
        pct = round((c / b - 1.0) * 100.0, 9)
        if pct > threshold_pct:
            status = "regressed"
        elif pct < -threshold_pct:
            status = "improved"
        else:
            status = "ok"
        changes.append(Change(key, status, b, c, pct))
    for key, entry in current.items():
        if key not in baseline:
            changes.append(Change(key, "new", None, primary_ratio(entry)))
    return changes


def format_comparison(changes, threshold_pct=REGRESSION_THRESHOLD_PCT):
    rows = [("bench/config", "baseline", "now", "change", "")]
    for ch in changes:
        mark = {"regressed": "REGRESSED", "improved": "improved", "missing": "missing now",
                "new": "new (no baseline)", "no-ratio": "no ratio"}.get(ch.status, "")
        rows.append((ch.key, format_ratio(ch.base_ratio), format_ratio(ch.ratio),
                     format_pct(ch.change_pct), mark))
    out = [f"smarm/tokio ratios vs baseline (threshold {threshold_pct:g}%)",
           _columns(rows, right=(1, 2, 3))]
    regressed = [c.key for c in changes if c.status == "regressed"]
    improved = [c.key for c in changes if c.status == "improved"]
    missing = [c.key for c in changes if c.status == "missing"]
    if improved:
        out.append("Improved: " + ", ".join(improved))
    if missing:
        out.append("Not measured in this run: " + ", ".join(missing))
    if regressed:
        out.append("REGRESSED: " + ", ".join(regressed))
    else:
        out.append("No regression.")
    return "\n".join(out)


def load_results(path):
    """Results dict from a baseline or --json file (a baseline wraps it under "results")."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"no baseline at {path}: create one with "
                           f"`python3 benches/sweep.py run --save-baseline`")
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise HarnessError(f"{path} is not valid JSON: {e}") from None
    results = data.get("results", data) if isinstance(data, dict) else None
    if not isinstance(results, dict):
        raise HarnessError(f"{path} holds no results")
    return results


def baseline_document(results, criterion_args, manifest_dir):
    return {
        "version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_commit": _git_commit(manifest_dir),
        "criterion_args": list(criterion_args),
        "env": {k: os.environ[k] for k in (ENV_ALLOC_INTERVAL, ENV_TIMESLICE_CYCLES)
                if k in os.environ},
        "results": results,
    }


def _git_commit(cwd):
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_json(path, data):
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


# ----------------------------------------------------------------------------------------------
# Sweep report

@dataclass
class SweepPoint:
    alloc_interval: int
    timeslice_cycles: int
    results: dict  # as rows_to_json returns


def sweep_keys(points):
    keys = []
    for p in points:
        for k in p.results:
            if k not in keys:
                keys.append(k)
    return keys


def sweep_deltas(points, key, default=DEFAULT_POINT):
    """{(alloc, tc): percent of smarm's median vs the default point's} for one bench/config."""
    base = next((p.results.get(key) for p in points
                 if (p.alloc_interval, p.timeslice_cycles) == tuple(default)), None)
    base_ns = base.get("smarm_ns") if base else None
    out = {}
    for p in points:
        e = p.results.get(key)
        ns = e.get("smarm_ns") if e else None
        out[(p.alloc_interval, p.timeslice_cycles)] = (
            (ns / base_ns - 1.0) * 100.0 if ns is not None and base_ns else None)
    return out


def format_sweep(points, default=DEFAULT_POINT):
    """Per bench/config: a grid alloc_interval x timeslice_cycles of
    '<smarm median vs default, %> (<ratio>)'."""
    if not points:
        return "No sweep point finished."
    allocs = sorted({p.alloc_interval for p in points})
    slices = sorted({p.timeslice_cycles for p in points})
    by_point = {(p.alloc_interval, p.timeslice_cycles): p for p in points}
    blocks = [f"Sweep: {len(points)} points; each cell is smarm's median vs the default point "
              f"({default[0]}, {format_cycles(default[1])}) in %, then (smarm/tokio ratio)."]
    for key in sweep_keys(points):
        deltas = sweep_deltas(points, key, default)
        base_point = by_point.get(tuple(default))
        base = base_point.results.get(key) if base_point else None
        vs = "tokio"
        if base and base.get("ratio") is None and base.get("reference"):
            vs = base["reference"]
        head = f"{key}"
        if base:
            head += (f"  default: smarm {format_ns(base.get('smarm_ns'))}, "
                     f"{vs} {format_ns(base.get('tokio_ns') if vs == 'tokio' else base.get('reference_ns'))}, "
                     f"ratio {format_ratio(primary_ratio(base))}")
        else:
            head += "  (no result at the default point)"
        measured = [(d, pt) for pt, d in deltas.items() if d is not None]
        if measured:
            best_d, best_pt = min(measured)
            head += f"; fastest smarm at {best_pt[0]} x {format_cycles(best_pt[1])} ({format_pct(best_d)})"
        grid = [["alloc \\ cycles"] + [format_cycles(t) for t in slices]]
        for a in allocs:
            line = [str(a)]
            for t in slices:
                p = by_point.get((a, t))
                e = p.results.get(key) if p else None
                if e is None:
                    line.append("")
                    continue
                line.append(f"{format_pct(deltas.get((a, t)))} ({format_ratio(primary_ratio(e))})")
            grid.append(line)
        blocks.append(head + "\n" + _indent(_columns(grid, right=tuple(range(1, len(slices) + 1)))))
    return "\n\n".join(blocks)


def _indent(text, by="  "):
    return "\n".join(by + line for line in text.splitlines())


CSV_COLUMNS = ("alloc_interval", "timeslice_cycles", "bench", "config", "smarm_ns", "tokio_ns", "ratio")


def sweep_csv(points):
    """The raw sweep data as CSV text, one row per point and bench/config."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for p in points:
        for key, e in p.results.items():
            bench, _, config = key.rpartition("/")
            if not bench:
                bench, config = key, ""
            w.writerow([p.alloc_interval, p.timeslice_cycles, bench, config,
                        _csv_num(e.get("smarm_ns")), _csv_num(e.get("tokio_ns")),
                        _csv_num(e.get("ratio"))])
    return buf.getvalue()


def _csv_num(x):
    return "" if x is None else repr(float(x))


def plot_sweep(points, path, default=DEFAULT_POINT):
    """One heatmap per bench/config of smarm's median vs the default point, saved to `path`."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise HarnessError("--plot needs matplotlib: `python3 -m pip install matplotlib` "
                           "(everything else runs on the standard library)") from None
    keys = sweep_keys(points)
    if not keys:
        raise HarnessError("nothing to plot")
    allocs = sorted({p.alloc_interval for p in points})
    slices = sorted({p.timeslice_cycles for p in points})
    cols = min(4, len(keys))
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.axis("off")
    for ax, key in zip(axes.flat, keys):
        deltas = sweep_deltas(points, key, default)
        grid = [[deltas.get((a, t)) for t in slices] for a in allocs]
        values = [[float("nan") if v is None else v for v in row] for row in grid]
        finite = [abs(v) for row in grid for v in row if v is not None]
        lim = max(finite + [1.0])
        im = ax.imshow(values, cmap="RdYlGn_r", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_xticks(range(len(slices)), [format_cycles(t) for t in slices])
        ax.set_yticks(range(len(allocs)), [str(a) for a in allocs])
        ax.set_xlabel("timeslice_cycles")
        ax.set_ylabel("alloc_interval")
        ax.set_title(key, fontsize=9)
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if v is not None:
                    ax.text(j, i, format_pct(v), ha="center", va="center", fontsize=7)
        fig.colorbar(im, ax=ax, label="smarm median vs default, %")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# Running criterion

def criterion_args(filter_=None, quick=False, extra=()):
    """Arguments after `cargo bench ... --`: the filter, the quick settings, then `extra`."""
    extra = list(extra)
    args = []
    if filter_:
        args.append(filter_)
    if quick:
        if "--quick" not in extra:
            args.append("--quick")
        if not any(a.startswith("--warm-up-time") for a in extra):
            args += ["--warm-up-time", QUICK_WARM_UP_S]
        if not any(a.startswith("--measurement-time") for a in extra):
            args += ["--measurement-time", QUICK_MEASUREMENT_S]
    return args + extra


def cargo_command(bench=BENCH_TARGET, crit_args=(), quiet=False, no_run=False):
    cmd = ["cargo", "bench"]
    if quiet:
        cmd.append("-q")
    cmd += ["--bench", bench]
    if no_run:
        cmd.append("--no-run")
    if crit_args and not no_run:
        cmd += ["--", *crit_args]
    return cmd


def find_criterion_dir(manifest_dir, env=None, metadata=None):
    """Where criterion writes its results, decided as criterion decides it.

    `metadata` is a function returning cargo's target directory (or None); injectable for tests.
    """
    env = os.environ if env is None else env
    manifest_dir = Path(manifest_dir)
    if env.get("CRITERION_HOME"):
        return manifest_dir / env["CRITERION_HOME"]  # an absolute path replaces manifest_dir
    if env.get("CARGO_TARGET_DIR"):
        return manifest_dir / env["CARGO_TARGET_DIR"] / "criterion"
    target = (metadata or _cargo_target_dir)(manifest_dir)
    if target:
        return Path(target) / "criterion"
    return manifest_dir / "target" / "criterion"


def _cargo_target_dir(manifest_dir):
    try:
        out = subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1"],
                             cwd=manifest_dir, capture_output=True, text=True, timeout=120)
        return json.loads(out.stdout)["target_directory"] if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError, KeyError):
        return None


@dataclass
class RunResult:
    returncode: int
    medians: dict  # id -> ns, in the order criterion ran them
    sources: dict  # id -> "estimates" | "stdout" | "paired"
    stderr_tail: list
    ratios: dict  # "<bench>/<config>" -> median of paired ratios (paired benches only)


def stream_process(cmd, cwd, env, on_line):
    """Run `cmd`, calling on_line(stream, line) for every line of stdout ('out') and stderr
    ('err') as it arrives (lone carriage returns end a line too). Returns the exit code."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, encoding="utf-8",
                            errors="replace", bufsize=1)
    lines = queue.Queue()

    def pump(stream, name):
        for line in stream:
            lines.put((name, line.rstrip("\n")))
        lines.put((name, None))

    threads = [threading.Thread(target=pump, args=(proc.stdout, "out"), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, "err"), daemon=True)]
    for t in threads:
        t.start()
    open_streams = 2
    try:
        while open_streams:
            name, line = lines.get()
            if line is None:
                open_streams -= 1
            else:
                on_line(name, line)
        return proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def run_suite(manifest_dir, bench=BENCH_TARGET, crit_args=(), env=None, echo=True,
              on_bench=None, quiet_cargo=False, criterion_dir=None):
    """Run `cargo bench` once and read its medians. on_bench(id) is called as each bench starts."""
    env = dict(os.environ if env is None else env)
    cmd = cargo_command(bench, crit_args, quiet=quiet_cargo)
    out_lines, seen, stderr_tail, paired_lines = [], [], [], []

    def on_line(stream, line):
        if echo:
            print(line, file=sys.stderr, flush=True)
        if strip_ansi(line).lstrip().startswith("paired: "):
            paired_lines.append(line)
        if stream == "out":
            out_lines.append(line)
        else:
            stderr_tail.append(line)
            del stderr_tail[:-60]
        bid = benchmarking_id(line)
        if bid is not None and bid not in seen:
            seen.append(bid)
            if on_bench:
                on_bench(bid)

    started = time.time()
    try:
        rc = stream_process(cmd, manifest_dir, env, on_line)
    except FileNotFoundError:
        raise HarnessError("cargo not found on PATH", EXIT_CARGO) from None
    if rc != 0:
        return RunResult(rc, {}, {}, stderr_tail, {})
    from_stdout = parse_criterion_stdout("\n".join(out_lines))
    ordered = list(seen) + [i for i in from_stdout if i not in seen]
    cdir = Path(criterion_dir) if criterion_dir else find_criterion_dir(manifest_dir, env)
    # Coarse file-system clocks: allow a little slack before the start.
    from_estimates = read_estimates(cdir, since=started - 2.0)
    medians, sources = merge_medians(ordered, from_estimates, from_stdout)
    paired_medians, ratios = parse_paired(paired_lines)
    apply_paired(medians, sources, paired_medians)
    return RunResult(rc, medians, sources, stderr_tail, ratios)


class Progress:
    """One stderr line per bench: point i/n, bench j/m, elapsed, estimated time left."""

    def __init__(self, n_points, out=None, clock=time.monotonic):
        self.n_points = n_points
        self.out = out or sys.stderr
        self.clock = clock
        self.started = clock()
        self.point = 0
        self.label = ""
        self.benches_per_point = None  # known once the first point has finished
        self.done_in_point = 0

    def start_point(self, index, label):
        self.point, self.label, self.done_in_point = index, label, 0

    def end_point(self):
        if self.benches_per_point is None:
            self.benches_per_point = self.done_in_point
        self.done_in_point = 0

    def bench_started(self, bench_id):
        self.done_in_point += 1
        print(self.line(bench_id), file=self.out, flush=True)

    def remaining(self):
        """Seconds left, from the time per bench so far; None until the first point is done."""
        if not self.benches_per_point:
            return None
        total = self.n_points * self.benches_per_point
        done = self.point * self.benches_per_point + max(0, self.done_in_point - 1)
        if done <= 0:
            return None
        return (self.clock() - self.started) / done * max(0, total - done)

    def line(self, bench_id):
        of = f"/{self.benches_per_point}" if self.benches_per_point else ""
        return (f"[point {self.point + 1}/{self.n_points} {self.label}] "
                f"bench {self.done_in_point}{of} {bench_id}  "
                f"elapsed {format_duration(self.clock() - self.started)}, "
                f"left ~{format_duration(self.remaining())}")


# ----------------------------------------------------------------------------------------------
# Commands

def _run_or_fail(args, extra, env=None, echo=None, on_bench=None):
    crit = criterion_args(args.filter, args.quick, extra)
    echo = (not args.quiet) if echo is None else echo
    res = run_suite(args.manifest_dir, args.bench, crit, env=env, echo=echo, on_bench=on_bench,
                    quiet_cargo=on_bench is not None, criterion_dir=args.criterion_dir)
    if res.returncode != 0:
        if not echo:  # show why it failed
            print("\n".join(res.stderr_tail), file=sys.stderr)
        raise HarnessError(f"cargo bench failed with exit code {res.returncode}", EXIT_CARGO)
    if not res.medians:
        raise HarnessError("cargo bench ran but no benchmark result was found"
                           + (f" for filter {args.filter!r}" if args.filter else
                              f" (does the bench target {args.bench!r} run criterion groups?)"))
    return res, crit


def _baseline_path(args):
    return Path(args.baseline) if args.baseline else Path(args.manifest_dir) / BASELINE_NAME


def cmd_run(args, extra):
    res, crit = _run_or_fail(args, extra)
    rows = pair_results(res.medians, res.ratios)
    print(format_table(rows, res.sources))
    results = rows_to_json(rows, res.sources)
    if args.json:
        write_json(args.json, results)
        print(f"Wrote {args.json}")
    if args.save_baseline:
        path = _baseline_path(args)
        if args.filter and path.is_file():
            merged = load_results(path)
            merged.update(results)
            results = merged
            print(f"Filtered run: updated {len(rows)} entries of the existing baseline")
        write_json(path, baseline_document(results, crit, args.manifest_dir))
        print(f"Saved baseline to {path}")
    return EXIT_OK


def cmd_regress(args, extra):
    baseline = load_results(_baseline_path(args))  # fail before a long run
    if args.current:
        current = load_results(args.current)
    else:
        res, _ = _run_or_fail(args, extra)
        rows = pair_results(res.medians, res.ratios)
        print(format_table(rows, res.sources))
        print()
        current = rows_to_json(rows, res.sources)
        if args.json:
            write_json(args.json, current)
    changes = compare(baseline, current, args.threshold)
    print(format_comparison(changes, args.threshold))
    return EXIT_REGRESSION if any(c.status == "regressed" for c in changes) else EXIT_OK


def cmd_sweep(args, extra):
    grid = GRIDS[args.grid]
    if args.plot:  # fail now rather than after an hour of benchmarking
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise HarnessError("--plot needs matplotlib: `python3 -m pip install matplotlib`") from None
    print(f"Building {args.bench} ...", file=sys.stderr, flush=True)
    rc = subprocess.run(cargo_command(args.bench, no_run=True), cwd=args.manifest_dir).returncode
    if rc != 0:
        raise HarnessError(f"cargo bench --no-run failed with exit code {rc}", EXIT_CARGO)
    progress = Progress(len(grid))
    points, failure = [], None
    try:
        for i, (alloc, cycles) in enumerate(grid):
            env = dict(os.environ, **{ENV_ALLOC_INTERVAL: str(alloc),
                                      ENV_TIMESLICE_CYCLES: str(cycles)})
            progress.start_point(i, f"alloc_interval={alloc} timeslice_cycles={cycles}")
            res, _ = _run_or_fail(args, extra, env=env, echo=args.verbose,
                                  on_bench=progress.bench_started)
            progress.end_point()
            rows = pair_results(res.medians, res.ratios)
            points.append(SweepPoint(alloc, cycles, rows_to_json(rows, res.sources)))
    except HarnessError as e:
        failure = e
    except KeyboardInterrupt:
        failure = HarnessError("interrupted", EXIT_INTERRUPTED)
    print(format_sweep(points))
    if points and args.save_csv:
        Path(args.save_csv).write_text(sweep_csv(points))
        print(f"Wrote {args.save_csv}")
    if points and args.json:
        write_json(args.json, {"points": [
            {"alloc_interval": p.alloc_interval, "timeslice_cycles": p.timeslice_cycles,
             "results": p.results} for p in points]})
        print(f"Wrote {args.json}")
    if failure:
        raise failure
    if args.plot:
        plot_sweep(points, args.plot)
        print(f"Wrote {args.plot}")
    return EXIT_OK


def split_passthrough(argv):
    """(our arguments, criterion's arguments): everything after the first `--` is criterion's."""
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def build_parser():
    parser = argparse.ArgumentParser(
        prog="sweep.py",
        description="Run smarm's criterion suite against tokio: table of smarm/tokio ratios, "
                    "baseline and regression check, sweep of the preemption knobs.",
        epilog="Arguments after `--` are passed to criterion, e.g. `run -- --noplot`. "
               "See the module docstring for details.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quick", action="store_true",
                        help=f"criterion --quick, warm-up {QUICK_WARM_UP_S}s, measurement "
                             f"{QUICK_MEASUREMENT_S}s")
    common.add_argument("--filter", metavar="NAME",
                        help="criterion filter: only benchmarks whose id matches NAME")
    common.add_argument("--manifest-dir", metavar="DIR", type=Path, default=REPO_ROOT,
                        help="crate whose suite to run (default: %(default)s)")
    common.add_argument("--bench", default=BENCH_TARGET,
                        help="cargo bench target (default: %(default)s)")
    common.add_argument("--criterion-dir", metavar="DIR", type=Path,
                        help="where criterion writes results (default: as criterion decides)")
    common.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", parents=[common], help="run the suite once and print the table",
                         description="Run the suite once and print smarm vs tokio medians.")
    run.add_argument("--save-baseline", action="store_true",
                     help="store the results as the regression baseline")
    run.add_argument("--baseline", metavar="FILE",
                     help=f"baseline file (default: <manifest-dir>/{BASELINE_NAME})")
    run.add_argument("-q", "--quiet", action="store_true", help="do not echo cargo's output")

    reg = sub.add_parser("regress", parents=[common], help="re-run and compare with the baseline",
                         description="Re-run the suite; exit 1 if a smarm/tokio ratio is more "
                                     "than the threshold worse than in the baseline.")
    reg.add_argument("--baseline", metavar="FILE",
                     help=f"baseline file (default: <manifest-dir>/{BASELINE_NAME})")
    reg.add_argument("--threshold", type=float, default=REGRESSION_THRESHOLD_PCT, metavar="PCT",
                     help="regression threshold in percent (default: %(default)s)")
    reg.add_argument("--current", metavar="FILE",
                     help="compare this --json result file instead of running the suite")
    reg.add_argument("-q", "--quiet", action="store_true", help="do not echo cargo's output")

    sw = sub.add_parser("sweep", parents=[common], help="run the suite over the knob grid",
                        description="Run the suite at each (alloc_interval, timeslice_cycles) "
                                    "point, setting SMARM_ALLOC_INTERVAL and "
                                    "SMARM_TIMESLICE_CYCLES.")
    sw.add_argument("--grid", choices=sorted(GRIDS), default="full",
                    help=f"full: {len(SWEEP_GRID)} points (SWEEP_GRID); seed: the "
                         f"{len(SEED_GRID)}-point grid (default: %(default)s)")
    sw.add_argument("--save-csv", metavar="FILE", help="write the raw data as CSV")
    sw.add_argument("--plot", metavar="FILE.png", help="draw a heatmap per bench (matplotlib)")
    sw.add_argument("-v", "--verbose", action="store_true", help="echo cargo's output")
    return parser


def main(argv=None):
    ours, extra = split_passthrough(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(ours)
    args.quiet = getattr(args, "quiet", False)
    commands = {"run": cmd_run, "regress": cmd_regress, "sweep": cmd_sweep}
    try:
        return commands[args.command](args, extra)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
