#!/usr/bin/env python3
"""Unit tests of benches/sweep.py; no cargo, no bench suite needed.

    python3 -m unittest discover -s benches -p 'test_*.py'
    python3 benches/test_sweep.py
"""

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import sweep  # noqa: E402  (benches/sweep.py, found through the path above)

MICRO = "\u00b5"

# What criterion 0.8 prints on stdout, both layouts, with a change block and a throughput line.
CRITERION_STDOUT = f"""\
Gnuplot not found, using plotters backend
chained_spawn/smarm/st  time:   [8.5012 ms 8.6250 ms 8.7501 ms]
chained_spawn/tokio/st  time:   [123.40 {MICRO}s 124.00 {MICRO}s 125.10 {MICRO}s]
                        change: [-1.2345% +0.5000% +2.0001%] (p = 0.52 > 0.05)
                        No change in performance detected.
Found 3 outliers among 100 measurements (3.00%)
  2 (2.00%) high mild
  1 (1.00%) high severe
mpsc_contention/unbounded/smarm/st
                        time:   [9.0000 ms 9.0620 ms 9.1000 ms]
                        change:
                        time:   [\u22125.0000% \u22123.0000% \u22121.0000%] (p = 0.00 < 0.05)
                        thrpt:  [+1.0101% +3.0928% +5.2632%]
                        Performance has improved.
spsc_throughput/recv_many/tokio/mt
                        time:   [1.5000 s 1.6000 s 1.7000 s]
                        thrpt:  [588.24 Kelem/s 625.00 Kelem/s 666.67 Kelem/s]
switch/raw_floor/st     time:   [2.9000 ns 3.0000 ns 3.1000 ns]
switch/smarm/st         time:   [512.00 ps 530.00 ps 540.00 ps]
"""


def estimates_json(median_ns, mean_ns=None):
    est = lambda v: {"confidence_interval": {"confidence_level": 0.95, "lower_bound": v * 0.99,
                                             "upper_bound": v * 1.01},
                     "point_estimate": v, "standard_error": v * 0.001}
    return {"mean": est(mean_ns if mean_ns is not None else median_ns * 1.1),
            "median": est(median_ns), "median_abs_dev": est(1.0),
            "slope": est(median_ns * 1.05), "std_dev": est(2.0)}


def make_criterion_tree(root, medians, with_meta=True):
    """A fake target/criterion: one <dir>/new/{estimates,benchmark}.json per id, named as
    criterion names them (group, function and value with '/' turned into '_')."""
    for bench_id, ns in medians.items():
        bench, runtime, config = sweep.split_id(bench_id)
        d = Path(root, bench.replace("/", "_"), runtime, config, "new")
        d.mkdir(parents=True, exist_ok=True)
        (d / "estimates.json").write_text(json.dumps(estimates_json(ns)))
        if with_meta:
            (d / "benchmark.json").write_text(json.dumps({
                "group_id": bench, "function_id": runtime, "value_str": config,
                "full_id": bench_id, "directory_name": f"{bench.replace('/', '_')}/{runtime}/{config}",
                "title": bench_id}))
        base = Path(d.parent, "base")  # criterion's previous run: must be ignored
        base.mkdir(exist_ok=True)
        (base / "estimates.json").write_text(json.dumps(estimates_json(ns * 100)))


def entry(smarm, tokio):
    return {"smarm_ns": smarm, "tokio_ns": tokio, "ratio": smarm / tokio}


class UnitsTest(unittest.TestCase):
    def test_to_ns_every_unit(self):
        cases = {("1.5", "ps"): 0.0015, ("2", "ns"): 2.0, ("3", f"{MICRO}s"): 3e3,
                 ("3", "\u03bcs"): 3e3, ("4", "us"): 4e3, ("5", "ms"): 5e6, ("6", "s"): 6e9}
        for (v, u), want in cases.items():
            with self.subTest(unit=u):
                self.assertAlmostEqual(sweep.to_ns(v, u), want)

    def test_to_ns_unknown_unit(self):
        with self.assertRaises(ValueError):
            sweep.to_ns("1", "min")

    def test_format_ns(self):
        self.assertEqual(sweep.format_ns(0.53), "530 ps")
        self.assertEqual(sweep.format_ns(3.0), "3.00 ns")
        self.assertEqual(sweep.format_ns(124_000), f"124 {MICRO}s")
        self.assertEqual(sweep.format_ns(8_634_000), "8.63 ms")
        self.assertEqual(sweep.format_ns(12_300_000), "12.3 ms")
        self.assertEqual(sweep.format_ns(1.6e9), "1.60 s")
        self.assertEqual(sweep.format_ns(None), "-")

    def test_format_small_things(self):
        self.assertEqual(sweep.format_ratio(69.56), "69.6")
        self.assertEqual(sweep.format_ratio(0.5234), "0.52")
        self.assertEqual(sweep.format_ratio(0.0523), "0.052")
        self.assertEqual(sweep.format_ratio(None), "-")
        self.assertEqual(sweep.format_pct(3.14), "+3.1%")
        self.assertEqual(sweep.format_pct(-12.0), "-12.0%")
        self.assertEqual(sweep.format_pct(0.01), "0.0%")
        self.assertEqual(sweep.format_duration(45), "45s")
        self.assertEqual(sweep.format_duration(187), "3m07s")
        self.assertEqual(sweep.format_duration(3720), "1h02m")
        self.assertEqual(sweep.format_duration(None), "?")
        self.assertEqual(sweep.format_cycles(150_000), "150k")
        self.assertEqual(sweep.format_cycles(1_200_000), "1.2M")


class SplitIdTest(unittest.TestCase):
    def test_plain_and_sub_variants(self):
        self.assertEqual(sweep.split_id("chained_spawn/smarm/st"), ("chained_spawn", "smarm", "st"))
        self.assertEqual(sweep.split_id("mpsc_contention/unbounded/smarm/st"),
                         ("mpsc_contention/unbounded", "smarm", "st"))
        self.assertEqual(sweep.split_id("spsc_throughput/recv_many/tokio/mt"),
                         ("spsc_throughput/recv_many", "tokio", "mt"))
        self.assertEqual(sweep.split_id("multi_thread_scaling/smarm/t1"),
                         ("multi_thread_scaling", "smarm", "t1"))
        self.assertEqual(sweep.split_id("switch/raw_floor/st"), ("switch", "raw_floor", "st"))

    def test_short_ids_degrade(self):
        self.assertEqual(sweep.split_id("a/b"), ("a", "b", ""))
        self.assertEqual(sweep.split_id("a"), ("a", "", ""))


class StdoutParserTest(unittest.TestCase):
    def test_both_layouts_all_units_change_lines_ignored(self):
        got = sweep.parse_criterion_stdout(CRITERION_STDOUT)
        want = {
            "chained_spawn/smarm/st": 8.625e6,
            "chained_spawn/tokio/st": 124e3,
            "mpsc_contention/unbounded/smarm/st": 9.062e6,
            "spsc_throughput/recv_many/tokio/mt": 1.6e9,
            "switch/raw_floor/st": 3.0,
            "switch/smarm/st": 0.53,
        }
        self.assertEqual(list(got), list(want))
        for k, v in want.items():
            self.assertAlmostEqual(got[k], v, places=6, msg=k)

    def test_odd_spacing_ascii_micro_and_colours(self):
        text = ("\x1b[32ma/smarm/st\x1b[0m time:[1.0us   2.5us 3us]\n"
                "b/tokio/st\ttime:   [ 1e3 ns 2.0e3 ns 3e3 ns ]\n"
                "c/tokio/st  time:   [1 \u03bcs 7 \u03bcs 9 \u03bcs]\n")
        got = sweep.parse_criterion_stdout(text)
        self.assertAlmostEqual(got["a/smarm/st"], 2500.0)
        self.assertAlmostEqual(got["b/tokio/st"], 2000.0)
        self.assertAlmostEqual(got["c/tokio/st"], 7000.0)

    def test_id_from_benchmarking_line_when_no_id_above(self):
        text = ("Benchmarking long/group/smarm/mt: Analyzing\n"
                "                        time:   [1.0 ms 2.0 ms 3.0 ms]\n")
        self.assertEqual(sweep.parse_criterion_stdout(text), {"long/group/smarm/mt": 2e6})

    def test_crlf_and_first_measurement_wins(self):
        text = "x/smarm/st  time:   [1 ns 2 ns 3 ns]\r\nx/smarm/st  time:   [7 ns 8 ns 9 ns]\r\n"
        self.assertEqual(sweep.parse_criterion_stdout(text), {"x/smarm/st": 2.0})

    def test_no_results(self):
        self.assertEqual(sweep.parse_criterion_stdout("running 0 tests\n\ntest result: ok\n"), {})

    def test_benchmarking_id(self):
        self.assertEqual(sweep.benchmarking_id("Benchmarking a/smarm/st"), "a/smarm/st")
        self.assertEqual(sweep.benchmarking_id(
            "Benchmarking a/smarm/st: Warming up for 3.0000 s"), "a/smarm/st")
        self.assertEqual(sweep.benchmarking_id(
            "Benchmarking a/smarm/st: Collecting 100 samples in estimated 5.0 s (10k iterations)"),
            "a/smarm/st")
        self.assertEqual(sweep.benchmarking_id("\x1b[1mBenchmarking b/tokio/mt: Analyzing\x1b[0m"),
                         "b/tokio/mt")
        self.assertIsNone(sweep.benchmarking_id("a/smarm/st  time: [1 ns 2 ns 3 ns]"))


class EstimatesTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = Path(self.tmp.name, "target", "criterion")
        self.medians = {"chained_spawn/smarm/st": 8.6e6, "chained_spawn/tokio/st": 1.24e5,
                        "mpsc_contention/unbounded/smarm/mt": 9.0e6,
                        "switch/raw_floor/st": 3.0}
        make_criterion_tree(self.root, self.medians)

    def tearDown(self):
        self.tmp.cleanup()

    def test_reads_median_by_full_id_and_ignores_base(self):
        self.assertEqual(sweep.read_estimates(self.root), self.medians)

    def test_without_benchmark_json_falls_back_to_the_path(self):
        other = Path(self.tmp.name, "other")
        make_criterion_tree(other, {"chained_spawn/smarm/st": 5.0}, with_meta=False)
        self.assertEqual(sweep.read_estimates(other), {"chained_spawn/smarm/st": 5.0})

    def test_stale_files_skipped(self):
        old = self.root / "chained_spawn" / "tokio" / "st" / "new" / "estimates.json"
        os.utime(old, (time.time() - 3600, time.time() - 3600))
        got = sweep.read_estimates(self.root, since=time.time() - 60)
        self.assertNotIn("chained_spawn/tokio/st", got)
        self.assertIn("chained_spawn/smarm/st", got)

    def test_missing_dir_and_broken_file(self):
        self.assertEqual(sweep.read_estimates(Path(self.tmp.name, "nope")), {})
        broken = self.root / "chained_spawn" / "smarm" / "st" / "new" / "estimates.json"
        broken.write_text("{not json")
        self.assertNotIn("chained_spawn/smarm/st", sweep.read_estimates(self.root))

    def test_merge_prefers_estimates_keeps_run_order(self):
        medians, sources = sweep.merge_medians(
            ["b/tokio/st", "a/smarm/st", "c/smarm/st"],
            {"a/smarm/st": 1.0, "b/tokio/st": 2.0, "z/stale/st": 9.0},
            {"a/smarm/st": 1.5, "c/smarm/st": 3.0})
        self.assertEqual(list(medians.items()), [("b/tokio/st", 2.0), ("a/smarm/st", 1.0),
                                                 ("c/smarm/st", 3.0)])
        self.assertEqual(sources["c/smarm/st"], "stdout")
        self.assertEqual(sources["a/smarm/st"], "estimates")

    def test_merge_without_printed_ids_uses_all_estimates(self):
        medians, _ = sweep.merge_medians([], {"b": 2.0, "a": 1.0}, {})
        self.assertEqual(list(medians), ["a", "b"])

    def test_find_criterion_dir(self):
        no_meta = lambda d: None
        self.assertEqual(sweep.find_criterion_dir("/m", {"CRITERION_HOME": "/ch"}, no_meta),
                         Path("/ch"))
        self.assertEqual(sweep.find_criterion_dir("/m", {"CARGO_TARGET_DIR": "t2"}, no_meta),
                         Path("/m/t2/criterion"))
        self.assertEqual(sweep.find_criterion_dir("/m", {}, lambda d: "/ws/target"),
                         Path("/ws/target/criterion"))
        self.assertEqual(sweep.find_criterion_dir("/m", {}, no_meta), Path("/m/target/criterion"))


class PairingTest(unittest.TestCase):
    MEDIANS = {
        "chained_spawn/smarm/st": 200.0, "chained_spawn/tokio/st": 100.0,
        "chained_spawn/smarm/mt": 50.0, "chained_spawn/tokio/mt": 100.0,
        "mpsc_contention/unbounded/smarm/st": 30.0, "mpsc_contention/unbounded/tokio/st": 30.0,
        "multi_thread_scaling/smarm/t2": 10.0, "multi_thread_scaling/tokio/t2": 20.0,
        "switch/smarm/st": 12.0, "switch/raw_floor/st": 3.0,
        "lonely/tokio/st": 5.0,
    }

    def rows(self):
        return {r.key: r for r in sweep.pair_results(self.MEDIANS)}

    def test_pairs_by_bench_and_config(self):
        rows = self.rows()
        self.assertEqual(list(rows), ["chained_spawn/st", "chained_spawn/mt",
                                      "mpsc_contention/unbounded/st", "multi_thread_scaling/t2",
                                      "switch/st", "lonely/st"])
        self.assertEqual(rows["chained_spawn/st"].ratio, 2.0)
        self.assertEqual(rows["chained_spawn/mt"].ratio, 0.5)
        self.assertEqual(rows["mpsc_contention/unbounded/st"].ratio, 1.0)
        self.assertEqual(rows["multi_thread_scaling/t2"].ratio, 0.5)

    def test_reference_runtime_is_info(self):
        sw = self.rows()["switch/st"]
        self.assertIsNone(sw.ratio)
        self.assertEqual((sw.reference, sw.reference_ns, sw.reference_ratio), ("raw_floor", 3.0, 4.0))
        self.assertIsNone(self.rows()["lonely/st"].smarm_ns)

    def test_json_shape(self):
        out = sweep.rows_to_json(sweep.pair_results(self.MEDIANS),
                                 {"chained_spawn/tokio/mt": "stdout"})
        self.assertEqual(out["chained_spawn/st"], {"smarm_ns": 200.0, "tokio_ns": 100.0, "ratio": 2.0})
        self.assertEqual(out["chained_spawn/mt"]["source"], "stdout")
        self.assertEqual(out["switch/st"]["reference_ratio"], 4.0)
        self.assertIsNone(out["switch/st"]["ratio"])
        json.dumps(out)  # serialisable

    def test_table_marks_slower_only_above_one(self):
        table = sweep.format_table(sweep.pair_results(self.MEDIANS))
        lines = {l.split()[0] + "/" + l.split()[1]: l for l in table.splitlines()[2:]
                 if len(l.split()) > 1 and not l[0].isdigit()}
        self.assertIn("SLOWER", lines["chained_spawn/st"])
        self.assertNotIn("SLOWER", lines["chained_spawn/mt"])
        self.assertNotIn("SLOWER", lines["mpsc_contention/unbounded/st"])  # exactly 1.0
        self.assertIn("info: 4.00x raw_floor (3.00 ns)", lines["switch/st"])
        self.assertNotIn("SLOWER", lines["switch/st"])
        self.assertIn("200 ns", lines["chained_spawn/st"])
        self.assertIn("4 pairs: smarm faster in 2, slower in 1", table)


class PairedTest(unittest.TestCase):
    LINES = [
        "Benchmarking fan_out_compute/smarm/st: Collecting 10 samples",
        "paired: fan_out_compute/st smarm 11190000 ns tokio 11200000 ns ratio 0.9991 (20 pairs)",
        "paired: multi_thread_scaling/t2 smarm 5.7e6 ns tokio 5710000.5 ns ratio 1.0010 (20 pairs)",
        "paired: broken line",
        "paired: fan_out_compute/tt smarm 1 ns tokio 2 ns (20 pairs)",  # no ratio: not ours
        "\x1b[1mpaired: fan_out_compute/mt smarm 5600000 ns tokio 5700000 ns ratio 0.98 (20 pairs)\x1b[0m",
        "paired: fan_out_compute/st smarm 11180000 ns tokio 11200000 ns ratio 0.9985 (20 pairs)",
    ]

    def test_parse(self):
        medians, ratios = sweep.parse_paired(self.LINES)
        self.assertEqual(medians, {
            "fan_out_compute/smarm/st": 11180000.0, "fan_out_compute/tokio/st": 11200000.0,
            "multi_thread_scaling/smarm/t2": 5.7e6, "multi_thread_scaling/tokio/t2": 5710000.5,
            "fan_out_compute/smarm/mt": 5600000.0, "fan_out_compute/tokio/mt": 5700000.0,
        })
        self.assertEqual(ratios, {"fan_out_compute/st": 0.9985, "multi_thread_scaling/t2": 1.001,
                                  "fan_out_compute/mt": 0.98})
        self.assertEqual(sweep.parse_paired(
            ["paired: nokey smarm 1 ns tokio 2 ns ratio 0.5 (1 pairs)"]), ({}, {}))

    def test_paired_results_replace_criterion_and_are_noted(self):
        medians = {"fan_out_compute/smarm/st": 11.0e6, "fan_out_compute/tokio/st": 10.0e6,
                   "chained_spawn/smarm/st": 1.0, "chained_spawn/tokio/st": 2.0}
        sources = {k: "estimates" for k in medians}
        paired_medians, ratios = sweep.parse_paired(self.LINES)
        sweep.apply_paired(medians, sources, paired_medians)
        rows = sweep.pair_results(medians, ratios)
        out = sweep.rows_to_json(rows, sources)
        self.assertEqual(out["fan_out_compute/st"], {
            "smarm_ns": 11180000.0, "tokio_ns": 11200000.0, "ratio": 0.9985, "source": "paired"})
        self.assertEqual(out["chained_spawn/st"], {"smarm_ns": 1.0, "tokio_ns": 2.0, "ratio": 0.5})
        # A side that criterion did not run (filtered out) still gets its paired median.
        self.assertEqual(out["multi_thread_scaling/t2"]["tokio_ns"], 5710000.5)
        table = sweep.format_table(rows, sources)
        line = next(l for l in table.splitlines() if l.split()[:2] == ["fan_out_compute", "st"])
        self.assertTrue(line.endswith("paired"), line)
        self.assertNotIn("SLOWER", line)
        line = next(l for l in table.splitlines() if l.split()[:2] == ["multi_thread_scaling", "t2"])
        self.assertTrue(line.endswith("SLOWER paired"), line)
        self.assertNotIn("paired", next(l for l in table.splitlines() if l.startswith("chained")))

    def test_a_bench_paired_with_its_reference(self):
        lines = ["paired: switch/st smarm 24000000 ns raw_floor 12500000 ns ratio 1.9 (20 pairs)"]
        medians = {"switch/smarm/st": 30.0e6, "switch/raw_floor/st": 10.0e6}
        sources = {k: "estimates" for k in medians}
        paired_medians, ratios = sweep.parse_paired(lines)
        self.assertEqual(paired_medians, {"switch/smarm/st": 24.0e6, "switch/raw_floor/st": 12.5e6})
        self.assertEqual(ratios, {"switch/st": 1.9})
        sweep.apply_paired(medians, sources, paired_medians)
        rows = sweep.pair_results(medians, ratios)
        out = sweep.rows_to_json(rows, sources)
        # The median of the pairs' ratios, not the ratio of the medians (1.92).
        self.assertEqual(out["switch/st"]["reference_ratio"], 1.9)
        self.assertIsNone(out["switch/st"]["ratio"])
        self.assertEqual(out["switch/st"]["reference_ns"], 12.5e6)
        table = sweep.format_table(rows, sources)
        line = next(l for l in table.splitlines() if l.startswith("switch"))
        self.assertIn("info: 1.90x raw_floor", line)
        self.assertNotIn("SLOWER", line)


class RegressionTest(unittest.TestCase):
    BASE = {"a/st": entry(100.0, 100.0), "b/st": entry(200.0, 100.0), "c/st": entry(50.0, 100.0)}

    def statuses(self, current, threshold=10):
        return {c.key: c.status for c in sweep.compare(self.BASE, current, threshold)}

    def test_threshold_edges(self):
        # a: exactly +10% is not a regression; b: +10.1% is; c: exactly -10% is not an improvement.
        cur = {"a/st": entry(110.0, 100.0), "b/st": entry(220.2, 100.0), "c/st": entry(45.0, 100.0)}
        self.assertEqual(self.statuses(cur), {"a/st": "ok", "b/st": "regressed", "c/st": "ok"})

    def test_improved(self):
        cur = {"a/st": entry(80.0, 100.0), "b/st": entry(200.0, 100.0), "c/st": entry(50.0, 100.0)}
        changes = {c.key: c for c in sweep.compare(self.BASE, cur)}
        self.assertEqual(changes["a/st"].status, "improved")
        self.assertAlmostEqual(changes["a/st"].change_pct, -20.0)

    def test_machine_speed_cancels(self):
        # Everything twice as slow, on both runtimes: the ratios and so the verdicts are unchanged.
        cur = {k: entry(v["smarm_ns"] * 2, v["tokio_ns"] * 2) for k, v in self.BASE.items()}
        self.assertEqual(set(self.statuses(cur).values()), {"ok"})

    def test_missing_and_new(self):
        cur = {"a/st": entry(100.0, 100.0), "d/st": entry(1.0, 1.0)}
        self.assertEqual(self.statuses(cur), {"a/st": "ok", "b/st": "missing", "c/st": "missing",
                                              "d/st": "new"})

    def test_reference_ratio_used_without_tokio(self):
        base = {"switch/st": {"smarm_ns": 40.0, "tokio_ns": None, "ratio": None,
                              "reference": "raw_floor", "reference_ns": 4.0, "reference_ratio": 10.0}}
        cur = {"switch/st": dict(base["switch/st"], smarm_ns=48.0, reference_ratio=12.0)}
        self.assertEqual(sweep.compare(base, cur)[0].status, "regressed")

    def test_no_ratio(self):
        base = {"x/st": {"smarm_ns": 1.0, "tokio_ns": None, "ratio": None}}
        self.assertEqual(sweep.compare(base, base)[0].status, "no-ratio")

    def test_threshold_is_configurable(self):
        cur = {"a/st": entry(106.0, 100.0), "b/st": entry(200.0, 100.0), "c/st": entry(50.0, 100.0)}
        self.assertEqual(self.statuses(cur, threshold=5)["a/st"], "regressed")
        self.assertEqual(sweep.REGRESSION_THRESHOLD_PCT, 10)

    def test_report_names_regressed_and_improved(self):
        cur = {"a/st": entry(150.0, 100.0), "b/st": entry(100.0, 100.0)}
        text = sweep.format_comparison(sweep.compare(self.BASE, cur))
        self.assertIn("REGRESSED: a/st", text)
        self.assertIn("Improved: b/st", text)
        self.assertIn("Not measured in this run: c/st", text)
        self.assertIn("+50.0%", text)
        ok = sweep.format_comparison(sweep.compare(self.BASE, self.BASE))
        self.assertIn("No regression.", ok)

    def test_load_results(self):
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaises(sweep.HarnessError) as e:
                sweep.load_results(Path(d, "missing.json"))
            self.assertIn("--save-baseline", str(e.exception))
            wrapped = Path(d, "base.json")
            sweep.write_json(wrapped, sweep.baseline_document(self.BASE, ["--quick"], d))
            self.assertEqual(sweep.load_results(wrapped), self.BASE)
            bare = Path(d, "bare.json")
            sweep.write_json(bare, self.BASE)
            self.assertEqual(sweep.load_results(bare), self.BASE)
            Path(d, "bad.json").write_text("[1, 2")
            with self.assertRaises(sweep.HarnessError):
                sweep.load_results(Path(d, "bad.json"))


class SweepFormatTest(unittest.TestCase):
    def points(self):
        return [
            sweep.SweepPoint(128, 300_000, {"a/st": entry(100.0, 50.0),
                                            "switch/st": {"smarm_ns": 10.0, "tokio_ns": None,
                                                          "ratio": None, "reference": "raw_floor",
                                                          "reference_ns": 2.0,
                                                          "reference_ratio": 5.0}}),
            sweep.SweepPoint(32, 300_000, {"a/st": entry(110.0, 50.0)}),
            sweep.SweepPoint(128, 150_000, {"a/st": entry(90.0, 50.0)}),
        ]

    def test_grids(self):
        self.assertEqual(sweep.SWEEP_GRID[0], (128, 300_000))
        self.assertEqual(len(sweep.SWEEP_GRID), 20)
        self.assertEqual(len(set(sweep.SWEEP_GRID)), 20)
        self.assertEqual(sweep.SEED_GRID[0], (128, 300_000))
        self.assertEqual(len(sweep.SEED_GRID), 10)
        self.assertEqual(len(set(sweep.SEED_GRID)), 10)
        self.assertTrue(set(sweep.SEED_GRID) <= set(sweep.SWEEP_GRID))

    def test_deltas(self):
        d = sweep.sweep_deltas(self.points(), "a/st")
        self.assertAlmostEqual(d[(128, 300_000)], 0.0)
        self.assertAlmostEqual(d[(32, 300_000)], 10.0)
        self.assertAlmostEqual(d[(128, 150_000)], -10.0)
        self.assertIsNone(sweep.sweep_deltas(self.points(), "switch/st")[(32, 300_000)])

    def test_deltas_without_default_point(self):
        d = sweep.sweep_deltas(self.points()[1:], "a/st")
        self.assertEqual(set(d.values()), {None})

    def test_table(self):
        text = sweep.format_sweep(self.points())
        self.assertIn("a/st  default: smarm 100 ns, tokio 50.0 ns, ratio 2.00", text)
        self.assertIn("fastest smarm at 128 x 150k (-10.0%)", text)
        self.assertIn("+10.0% (2.20)", text)
        self.assertIn("-10.0% (1.80)", text)
        self.assertIn("0.0% (2.00)", text)
        self.assertIn("switch/st  default: smarm 10.0 ns, raw_floor 2.00 ns, ratio 5.00", text)
        self.assertEqual(sweep.format_sweep([]), "No sweep point finished.")

    def test_csv(self):
        rows = list(csv.reader(io.StringIO(sweep.sweep_csv(self.points()))))
        self.assertEqual(tuple(rows[0]), sweep.CSV_COLUMNS)
        self.assertEqual(rows[1], ["128", "300000", "a", "st", "100.0", "50.0", "2.0"])
        self.assertEqual(rows[2], ["128", "300000", "switch", "st", "10.0", "", ""])
        self.assertEqual(len(rows), 1 + 2 + 1 + 1)

    def test_csv_keeps_sub_variant_in_bench(self):
        pts = [sweep.SweepPoint(64, 150_000, {"mpsc_contention/unbounded/mt": entry(2.0, 4.0)})]
        rows = list(csv.reader(io.StringIO(sweep.sweep_csv(pts))))
        self.assertEqual(rows[1][2:4], ["mpsc_contention/unbounded", "mt"])

    def test_plot_without_matplotlib_is_a_clear_error(self):
        real_import = __import__

        def no_mpl(name, *a, **k):
            if name.startswith("matplotlib"):
                raise ImportError(name)
            return real_import(name, *a, **k)

        import builtins
        builtins.__import__ = no_mpl
        try:
            with self.assertRaises(sweep.HarnessError) as e:
                sweep.plot_sweep(self.points(), "x.png")
        finally:
            builtins.__import__ = real_import
        self.assertIn("matplotlib", str(e.exception))

    def test_progress(self):
        now = [0.0]
        out = io.StringIO()
        p = sweep.Progress(4, out=out, clock=lambda: now[0])
        p.start_point(0, "a=128")
        for i in range(3):
            now[0] += 10
            p.bench_started(f"b{i}")
        self.assertIn("[point 1/4 a=128] bench 3 b2", out.getvalue())
        self.assertIn("left ~?", out.getvalue())
        now[0] += 10
        p.end_point()
        p.start_point(1, "a=32")
        p.bench_started("b0")  # 3 benches done in 40 s; 12 in all: 9 left at 13.3 s each
        last = out.getvalue().splitlines()[-1]
        self.assertIn("[point 2/4 a=32] bench 1/3 b0", last)
        self.assertIn("elapsed 40s", last)
        self.assertIn("left ~2m00s", last)


class CommandLineTest(unittest.TestCase):
    def parse(self, argv):
        ours, extra = sweep.split_passthrough(argv)
        return sweep.build_parser().parse_args(ours), extra

    def test_passthrough(self):
        self.assertEqual(sweep.split_passthrough(["run", "--quick", "--", "--noplot", "--", "x"]),
                         (["run", "--quick"], ["--noplot", "--", "x"]))
        self.assertEqual(sweep.split_passthrough(["run"]), (["run"], []))

    def test_run_options(self):
        args, extra = self.parse(["run", "--quick", "--filter", "chained", "--json", "o.json",
                                  "--save-baseline", "--manifest-dir", "/tmp/x", "--", "--noplot"])
        self.assertTrue(args.quick and args.save_baseline)
        self.assertEqual((args.filter, args.json, args.manifest_dir), ("chained", "o.json", Path("/tmp/x")))
        self.assertEqual(extra, ["--noplot"])
        self.assertEqual(args.bench, "general")

    def test_defaults(self):
        args, _ = self.parse(["regress"])
        self.assertEqual(args.threshold, 10)
        self.assertEqual(args.manifest_dir, sweep.REPO_ROOT)
        self.assertIsNone(args.baseline)
        self.assertEqual(sweep._baseline_path(args), sweep.REPO_ROOT / "benches" / ".baseline.json")
        args, _ = self.parse(["sweep", "--grid", "seed", "--save-csv", "r.csv", "--plot", "s.png"])
        self.assertEqual((args.grid, args.save_csv, args.plot), ("seed", "r.csv", "s.png"))
        self.assertEqual(self.parse(["sweep"])[0].grid, "full")

    def test_bad_usage(self):
        with contextlib.redirect_stderr(io.StringIO()):
            for argv in ([], ["nope"], ["sweep", "--grid", "huge"]):
                with self.subTest(argv=argv), self.assertRaises(SystemExit) as e:
                    self.parse(argv)
                self.assertEqual(e.exception.code, 2)

    def test_criterion_args(self):
        self.assertEqual(sweep.criterion_args(), [])
        self.assertEqual(sweep.criterion_args("chained", True, ["--noplot"]),
                         ["chained", "--quick", "--warm-up-time", sweep.QUICK_WARM_UP_S,
                          "--measurement-time", sweep.QUICK_MEASUREMENT_S, "--noplot"])
        # The user's own times win over --quick's.
        self.assertEqual(sweep.criterion_args(None, True, ["--measurement-time", "9"]),
                         ["--quick", "--warm-up-time", sweep.QUICK_WARM_UP_S,
                          "--measurement-time", "9"])

    def test_cargo_command(self):
        self.assertEqual(sweep.cargo_command("general", ["x", "--quick"]),
                         ["cargo", "bench", "--bench", "general", "--", "x", "--quick"])
        self.assertEqual(sweep.cargo_command("general", [], quiet=True),
                         ["cargo", "bench", "-q", "--bench", "general"])
        self.assertEqual(sweep.cargo_command("general", ["x"], no_run=True),
                         ["cargo", "bench", "--bench", "general", "--no-run"])

    def test_regress_without_baseline_exits_2(self):
        with tempfile.TemporaryDirectory() as d, contextlib.redirect_stderr(io.StringIO()) as err:
            code = sweep.main(["regress", "--manifest-dir", d])
        self.assertEqual(code, 2)
        self.assertIn("no baseline", err.getvalue())

    def test_regress_from_files(self):
        with tempfile.TemporaryDirectory() as d:
            base, cur = Path(d, "base.json"), Path(d, "cur.json")
            sweep.write_json(base, {"a/st": entry(100.0, 100.0)})
            sweep.write_json(cur, {"a/st": entry(120.0, 100.0)})
            with contextlib.redirect_stdout(io.StringIO()) as out:
                code = sweep.main(["regress", "--baseline", str(base), "--current", str(cur)])
            self.assertEqual(code, 1)
            self.assertIn("REGRESSED: a/st", out.getvalue())
            with contextlib.redirect_stdout(io.StringIO()):
                self.assertEqual(sweep.main(["regress", "--baseline", str(base),
                                             "--current", str(base)]), 0)

    def test_help_of_every_command(self):
        for script in (HERE / "sweep.py", HERE.parent / "sweep.py"):
            for cmd in ([], ["run"], ["regress"], ["sweep"]):
                with self.subTest(script=script.name, cmd=cmd):
                    p = subprocess.run([sys.executable, str(script), *cmd, "--help"],
                                       capture_output=True, text=True, cwd="/")
                    self.assertEqual(p.returncode, 0, p.stderr)
                    self.assertIn("usage:", p.stdout)

    def test_forwarder_keeps_exit_code(self):
        p = subprocess.run([sys.executable, str(HERE.parent / "sweep.py"), "regress",
                            "--baseline", "/nonexistent/b.json"],
                           capture_output=True, text=True, cwd="/")
        self.assertEqual(p.returncode, 2)
        self.assertIn("no baseline", p.stderr)


if __name__ == "__main__":
    unittest.main()
