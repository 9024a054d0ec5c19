"""bench: the backlog sweep's rows, its result file and its picture, on real servers with the real ab.

Shapes only, never timings: a loaded machine may connect slowly or drop SYNs at
any backlog, so no test says how fast anything was.
"""

import dataclasses
import datetime
import json

import pytest

from epollbook import bench, plots
from epollbook.launch import serve
from tools import need_tool, no_server_left_running

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

AB_REPORT = """\
Concurrency Level:      100
Time taken for tests:   1.000 seconds
Complete requests:      17731
Failed requests:        3
   (Connect: 0, Receive: 0, Length: 3, Exceptions: 0)
Requests per second:    17730.41 [#/sec] (mean)

Connection Times (ms)
              min  mean[+/-sd] median   max
Connect:        0    0   0.1      0       2
"""

AB_GAVE_UP = """\
Benchmarking 127.0.0.1 (be patient)
Total of 27000 requests completed
"""

AB_TIMINGS = """\
starttime\tseconds\tctime\tdtime\tttime\twait
Sat Nov 28 23:04:58 2026\t1795993498396383\t0\t1\t1\t1
Sat Nov 28 23:04:58 2026\t1795993498396390\t1030\t0\t1031\t0
Sat Nov 28 23:04:58 2026\t1795993498396391\t2\t1\t3\t1
"""


@pytest.fixture(scope="module")
def sweep():
    """A short sweep of two backlogs, one either side of ab's 100 connections (about 3 s)."""
    need_tool("ab")
    with no_server_left_running():
        return bench.backlog_sweep((1, 128), seconds=1)


# -- the pure parts ---------------------------------------------------------------------------------------


@pytest.mark.quick
def test_ab_report_gives_complete_failed_and_rate():
    assert bench.parse_ab_report(AB_REPORT) == (17731, 3, 17730.41)


@pytest.mark.quick
def test_a_run_ab_gave_up_gives_only_what_it_completed():
    assert bench.parse_ab_report(AB_GAVE_UP) == (27000, None, None)


@pytest.mark.quick
def test_text_that_is_not_abs_report_is_refused_with_a_sentence():
    with pytest.raises(ValueError, match="not a report of ab's"):
        bench.parse_ab_report("Server timed out\n")


@pytest.mark.quick
def test_ab_timings_give_connect_and_total_per_request():
    assert bench.parse_ab_timings(AB_TIMINGS) == ([0, 1030, 2], [1, 1031, 3])
    with pytest.raises(ValueError, match="no ctime and ttime"):
        bench.parse_ab_timings("a\tb\n1\t2\n")


@pytest.mark.quick
def test_latency_is_median_99th_percentile_and_most_by_nearest_rank():
    assert bench.Latency.of([5, 1, 3]) == bench.Latency(3, 5, 5)
    assert bench.Latency.of(list(range(1, 201))) == bench.Latency(100, 198, 200)
    assert bench.Latency.of([]) == bench.Latency(None, None, None)


@pytest.mark.quick
@pytest.mark.parametrize("arguments", [{"backlogs": ()}, {"backlogs": (-1,)}, {"seconds": 0}, {"seconds": 1.5},
                                       {"seconds": None, "requests": 99}])
def test_a_sweep_that_cannot_run_is_refused_before_any_server_starts(arguments):
    with pytest.raises(ValueError, match=r"backlogs must be|whole seconds|as many requests as connections"):
        bench.backlog_sweep(**{"backlogs": (1,), **arguments})


# -- a live sweep -----------------------------------------------------------------------------------------


def test_each_backlog_gives_one_row_with_every_field(sweep):
    assert [(row.server, row.backlog, row.concurrency, row.round, row.mode) for row in sweep] == [
        ("example2", 1, 100, 1, "time"), ("example2", 128, 100, 1, "time")]
    for row in sweep:
        assert row.requests > 0, f"no request completed: {row}"
        assert row.seconds > 0 and row.listen_overflows >= 0, row
        assert row.most_waiting is None or 0 <= row.most_waiting <= row.concurrency, row
        if row.gave_up:  # ab stopped it: only the count of completed requests is known
            assert (row.failed, row.slow_connects, row.connect_ms.max) == (None, None, None), row
            continue
        assert row.failed >= 0 and 0 <= row.slow_connects <= row.requests, row
        assert row.requests_per_second > 0, row
        for latency in (row.connect_ms, row.total_ms):
            assert 0 <= latency.p50 <= latency.p99 <= latency.max, row
        assert row.connect_ms.max <= row.total_ms.max, f"a request connected for longer than it took: {row}"


def test_every_request_ab_completed_has_its_timings():
    need_tool("ab")
    with no_server_left_running(), serve("level") as server:
        run = bench.run_ab(server, requests=500)  # ab -n 500, as the article runs it
    assert not run.gave_up, run.report
    assert run.requests == 500 and run.failed == 0, run.report
    assert len(run.connect_ms) == len(run.total_ms) == run.requests, (
        f"ab reported {run.requests} complete requests but wrote timings for {len(run.connect_ms)}")


def test_the_result_file_round_trips_with_where_and_when_it_was_measured(sweep, tmp_path):
    figure = plots.backlog_sweep(sweep)
    written = bench.write_result("backlog", {"backlogs": [1, 128]}, sweep, figure=figure, out=tmp_path / "out",
                                 settings=("net.core.somaxconn",))
    assert [path.name for path in written] == ["backlog.json", "backlog.png"]
    result = bench.read_result(written[0])
    assert [bench.BacklogRow.from_dict(row) for row in result["rows"]] == sweep
    assert result["measurement"] == "backlog" and result["parameters"] == {"backlogs": [1, 128]}
    assert datetime.datetime.fromisoformat(result["date"]).tzinfo is not None, result["date"]
    assert result["kernel"] and result["python"] and result["machine"]["cpus"] >= 1, result
    assert "ApacheBench" in result["tools"]["ab"], result["tools"]
    assert result["settings"]["net.core.somaxconn"].isdigit(), result["settings"]
    picture = written[1].read_bytes()
    assert picture.startswith(PNG_SIGNATURE) and len(picture) > 1000, f"not a PNG: {picture[:16]!r}"


def test_the_picture_draws_rows_read_back_from_json_and_runs_ab_gave_up(sweep, tmp_path):
    rows = json.loads(json.dumps([dataclasses.asdict(row) for row in sweep]))
    rows.append({**rows[0], "backlog": 4, "gave_up": True, "failed": None, "slow_connects": None,
                 "connect_ms": {"p50": None, "p99": None, "max": None}})
    path = tmp_path / "drawn.png"
    plots.backlog_sweep(rows, title="two backlogs").savefig(path)
    assert path.read_bytes().startswith(PNG_SIGNATURE) and path.stat().st_size > 1000
    with pytest.raises(ValueError, match="no rows"):
        plots.backlog_sweep([])


def test_the_command_line_writes_json_and_png_and_prints_a_table(tmp_path, monkeypatch, capsys):
    need_tool("ab")
    tiny = {"backlog": {**bench.BACKLOG_PRESETS["short"]["backlog"], "backlogs": (128,), "seconds": 1},
            "backlog-count": {"backlogs": (99,), "servers": ("example2",), "seconds": None, "requests": 200,
                              "rounds": 1}}
    monkeypatch.setitem(bench.BACKLOG_PRESETS, "short", tiny)  # the command line itself, in a second or two
    with no_server_left_running():
        assert bench.main(["backlog", "--out", str(tmp_path), "--server", "level"]) == 0
    printed = capsys.readouterr().out
    assert "backlog" in printed and "level" in printed and "wrote" in printed, printed
    for name, mode in (("backlog", "time"), ("backlog-count", "count")):
        result = bench.read_result(tmp_path / f"{name}.json")
        assert [(row["server"], row["mode"]) for row in result["rows"]] == [("level", mode)], result["rows"]
        assert result["parameters"]["preset"] == "short", result["parameters"]
        assert (tmp_path / f"{name}.png").read_bytes().startswith(PNG_SIGNATURE), name


@pytest.mark.quick
def test_the_command_line_refuses_an_unknown_server_with_the_known_ones(capsys):
    with pytest.raises(SystemExit) as exited:
        bench.main(["backlog", "--server", "nope"])
    said = capsys.readouterr().err
    assert exited.value.code == 2 and "invalid choice: 'nope'" in said and "example2" in said, said
