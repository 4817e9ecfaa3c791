"""Unit tests of benchlib.py: the parsers on real tool output, the percentile and median rules
and the tables. Run with `python3 -m unittest discover -s bench/lib`.
"""

import contextlib
import io
import os
import tempfile
import unittest

import benchlib

WRK_OUT = """Running 1s test @ http://127.0.0.1:18600/
  1 threads and 5 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    59.87us   64.87us   1.92ms   99.47%
    Req/Sec    63.77k     0.97k   65.14k    70.00%
  Latency Distribution
     50%   57.00us
     75%   65.00us
     90%   69.00us
     99%    1.20ms
  63383 requests in 1.00s, 5.38MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  63151.23
Transfer/sec:      5.36MB
"""

H2LOAD_OUT = """finished in 4.32ms, 4630.70 req/s, 402.47KB/s
requests: 20 total, 20 started, 20 done, 18 succeeded, 1 failed, 1 errored, 0 timeout
status codes: 19 2xx, 0 3xx, 1 4xx, 0 5xx
"""


def run(target, proto, rnd, rps, steal=0, busy=0, p50=1.0, p99=2.0, rss=2048, errors=0):
    """One RUNS line, in the order benchlib.load_runs reads; 1000 jiffies in run and gap."""
    return (
        f"{target}\t{proto}\t{rnd}\t{rps}\t{p50}\t{p99}\t{errors}\t{rss}\t{steal}\t1000"
        f"\t{busy}\t1000\n"
    )


class Parsers(unittest.TestCase):
    def test_wrk_reads_rps_percentiles_and_all_errors(self):
        rps, p50, p99, errors = benchlib.parse_wrk(WRK_OUT)
        self.assertEqual(rps, 63151.23)
        self.assertAlmostEqual(p50, 0.057)
        self.assertAlmostEqual(p99, 1.2)
        # 2 read + 1 timeout socket errors and 4 non-2xx answers.
        self.assertEqual(errors, 7)

    def test_wrk_without_figures_is_an_error(self):
        with self.assertRaises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
            benchlib.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")

    def test_duration_units(self):
        self.assertAlmostEqual(benchlib.duration_ms("501.00us"), 0.501)
        self.assertAlmostEqual(benchlib.duration_ms("2.00s"), 2000.0)

    def test_h2load_percentiles_come_from_the_log(self):
        with tempfile.NamedTemporaryFile("w", delete=False) as log:
            # 100 requests of 1..100 ms (in microseconds), the 7th answered 404.
            for i in range(1, 101):
                status = 404 if i == 7 else 200
                log.write(f"1795474191826288\t{status}\t{i * 1000}\n")
        try:
            rps, p50, p99, errors = benchlib.parse_h2load(H2LOAD_OUT, log.name)
        finally:
            os.unlink(log.name)
        self.assertEqual(rps, 4630.70)
        self.assertEqual(p50, 50.0)
        self.assertEqual(p99, 99.0)
        # One failed and one errored request in the summary, plus one non-2xx line in the log.
        self.assertEqual(errors, 3)

    def test_h2load_with_no_success_is_an_error(self):
        out = H2LOAD_OUT.replace("18 succeeded", "0 succeeded")
        with self.assertRaises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
            benchlib.parse_h2load(out, "/nonexistent")

    def test_percentile_is_nearest_rank(self):
        values = list(range(1, 1001))
        self.assertEqual(benchlib.percentile(values, 99), 990)
        self.assertEqual(benchlib.percentile(values, 50), 500)
        self.assertEqual(benchlib.percentile([7], 99), 7)


class Tables(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.runs = os.path.join(self.dir.name, "runs.tsv")
        self.notes = os.path.join(self.dir.name, "notes.tsv")

    def tearDown(self):
        self.dir.cleanup()

    def write(self, path, lines):
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(lines)

    def test_flagged_runs_leave_the_median_when_clean_runs_exist(self):
        # Round 2 had 60 steal jiffies of 1000: 6 % >= 2.5 %.
        self.write(
            self.runs,
            [
                run("nginx", "h1", 1, 51000),
                run("nginx", "h1", 2, 49000, steal=60),
                run("nginx", "h1", 3, 52000),
            ],
        )
        runs = benchlib.load_runs(self.runs)
        self.assertEqual([r["flagged"] for r in runs], [False, True, False])
        figures, kept, flagged, all_flagged = benchlib.medians(runs)
        self.assertEqual(figures["rps"], 51500)
        self.assertEqual((kept, flagged, all_flagged), (2, 1, False))

    def test_a_busy_gap_flags_the_run(self):
        # 99 of 1000 jiffies busy is 9.9 %, under the 10 % limit; 100 is at it.
        self.write(self.runs, [run("x", "h1", 1, 100, busy=99), run("x", "h1", 2, 100, busy=100)])
        runs = benchlib.load_runs(self.runs)
        self.assertEqual([r["flagged"] for r in runs], [False, True])
        self.assertIn("| 10.0 | ⚠ |", benchlib.runs_table(self.runs).splitlines()[-1])

    def test_steal_just_under_the_limit_is_not_flagged(self):
        # 24 of 1000 jiffies is 2.4 % (< 2.5 %); 25 is 2.5 %.
        self.write(self.runs, [run("x", "h1", 1, 100, steal=24), run("x", "h1", 2, 100, steal=25)])
        self.assertEqual([r["flagged"] for r in benchlib.load_runs(self.runs)], [False, True])

    def test_all_flagged_runs_still_give_a_median(self):
        self.write(self.runs, [run("x", "h1", 1, 100, steal=30), run("x", "h1", 2, 300, steal=30)])
        figures, kept, _, all_flagged = benchlib.medians(benchlib.load_runs(self.runs))
        self.assertEqual((figures["rps"], kept, all_flagged), (200, 2, True))

    def test_summary_has_ratios_to_each_baseline_and_notes(self):
        self.write(
            self.runs,
            [
                run("slipway", "h1", 1, 45000),
                run("nginx", "h1", 1, 50000),
                run("haproxy", "h1", 1, 60000),
                run("slipway", "h2", 1, 1),
            ],
        )
        self.write(self.notes, ["caddy\th1\tnot available from Debian's packages\n"])
        table = benchlib.summarize(self.runs, self.notes, "h1", ["nginx", "haproxy"]).splitlines()
        self.assertEqual(len(table), 2 + 3 + 1)
        # 45000 / 50000 = 0.90 and 45000 / 60000 = 0.75; RSS 2048 kB = 2.0 MiB.
        self.assertEqual(table[2], "| slipway | 45000 | 1.000 | 2.000 | 2.0 | 0.90 | 0.75 | 1 | 0 |")
        self.assertEqual(table[-1].split(" | ")[1], "not available from Debian's packages")
        # Every row has as many cells as the header.
        self.assertEqual({row.count("|") for row in table}, {table[0].count("|")})

    def test_missing_baseline_shows_a_dash(self):
        self.write(self.runs, [run("slipway", "h2", 1, 100)])
        table = benchlib.summarize(self.runs, self.notes, "h2", ["nginx"]).splitlines()
        self.assertIn("| – |", table[2])

    def test_ratio_sentence(self):
        self.write(
            self.runs,
            [run("on", "h1", 1, 50000, p50=0.98), run("off", "h1", 1, 52000, p50=0.95)],
        )
        self.assertEqual(
            benchlib.ratio(self.runs, "h1", "off", "on"),
            "off: +4.0 % req/s against on; p50 -0.030 ms, p99 +0.000 ms.",
        )


class ControlPlaneHelpers(unittest.TestCase):
    def test_spread_is_median_min_max(self):
        self.assertEqual(benchlib.spread([3, 1, 2, 10]), (2.5, 1, 10))
        self.assertEqual(benchlib.spread([7]), (7, 7, 7))

    def test_spread_cells_round_and_handle_no_values(self):
        self.assertEqual(benchlib.spread_cells([12.04, 11.5, 30.26]), "12.0 | 11.5 | 30.3")
        self.assertEqual(benchlib.spread_cells([0.25, 0.5], digits=2), "0.38 | 0.25 | 0.50")
        self.assertEqual(benchlib.spread_cells([]), "– | – | –")

    def test_event_time_is_utc_with_milliseconds(self):
        epoch = benchlib.event_epoch("2026-11-24T01:15:32.123Z")
        self.assertAlmostEqual(epoch, 1795482932.123, places=6)
        self.assertEqual(benchlib.event_epoch("1970-01-01T00:00:01Z"), 1.0)

    def test_http_answer_with_length_or_chunks(self):
        plain = b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n{}"
        self.assertEqual(benchlib.parse_http_answer(plain), (200, b"{}"))
        chunked = (
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        self.assertEqual(benchlib.parse_http_answer(chunked), (404, b"abcde"))

    def test_http_answer_cut_before_the_body_is_an_error(self):
        with self.assertRaises(ValueError):
            benchlib.parse_http_answer(b"HTTP/1.1 200 OK\r\ncontent-le")


if __name__ == "__main__":
    unittest.main()
