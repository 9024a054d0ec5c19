"""scale: the cost of one wait of select, poll and epoll as idle connections grow, on real sockets.

Shapes with margins, never timings: epoll's wait at 10,000 idle connections
costs within a few times its wait at 10; poll's grows by far more; select
refuses a descriptor numbered 1024 or more, however few are open. Nothing
leaks: the descriptor limit is put back, every connection is closed, the
helper process that holds the other ends is gone.
"""

import resource

import pytest

from epollbook import bench, plots, scale

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def rows():
    """One short sweep, 10 to 10,000 idle connections (well under a second; more rounds than the chapter)."""
    if 10_000 not in scale.sizes_within_limit((10_000,)):
        pytest.skip(f"this process's hard descriptor limit ({resource.getrlimit(resource.RLIMIT_NOFILE)[1]}) "
                    "leaves no room for 10,000 connections")
    return scale.wait_costs((10, 100, 1000, 10_000), rounds=7)


def by(rows, call, connections):
    (row,) = [row for row in rows if (row.call, row.connections) == (call, connections)]
    return row


def test_epolls_wait_at_10000_idle_connections_costs_within_a_few_times_its_wait_at_10(rows):
    grew = scale.ratio(rows, "epoll", 10, 10_000)
    assert grew < 4, f"epoll's wait cost {grew:.1f} times as much at 10,000 idle connections as at 10: {rows}"


def test_polls_wait_grows_by_far_more(rows):
    poll, epoll = scale.ratio(rows, "poll", 10, 10_000), scale.ratio(rows, "epoll", 10, 10_000)
    assert poll > 50, f"poll's wait cost only {poll:.1f} times as much at 10,000 idle connections as at 10"
    assert poll > 20 * epoll, f"poll's wait grew {poll:.1f} times, epoll's {epoll:.1f} times: not far apart"


def test_at_10000_connections_a_poll_costs_many_epoll_waits(rows):
    poll, epoll = by(rows, "poll", 10_000).cpu_us, by(rows, "epoll", 10_000).cpu_us
    assert poll > 50 * epoll, f"at 10,000 connections poll's wait took {poll} µs, epoll's {epoll} µs"


def test_select_grows_while_it_can_and_refuses_beyond_descriptor_1023(rows):
    assert by(rows, "select", 10).error is None and by(rows, "select", 100).error is None
    assert scale.ratio(rows, "select", 10, 100) > 2, f"select's wait did not grow from 10 to 100: {rows}"
    refused = by(rows, "select", 10_000)
    assert refused.highest_fd >= scale.SELECT_LIMIT
    assert refused.error == "ValueError: filedescriptor out of range in select()", refused
    assert refused.cpu_us is None


def test_only_select_refuses_and_every_other_row_is_measured(rows):
    # A wait that reported anything but the one active connection would have raised: each row saw exactly one.
    assert {row.call for row in rows if row.error} == {"select"}
    measured = [row for row in rows if row.error is None]
    assert all(row.waits >= 3 and row.cpu_us > 0 and row.wall_us > 0 for row in measured), measured


def test_select_refuses_one_socket_at_descriptor_1024_with_few_open():
    refusal = scale.select_refuses()
    assert refusal.fd >= 1024
    assert refusal.open < 100, f"{refusal.open} descriptors were open: the point is that few are"
    assert refusal.said == {"select": "ValueError: filedescriptor out of range in select()",
                            "poll": "ready", "epoll": "ready"}, refusal


def test_select_accepts_a_socket_at_descriptor_1023():
    refusal = scale.select_refuses(1023)
    if refusal.fd != 1023:
        pytest.skip(f"descriptor 1023 was taken in this process, so the socket went to {refusal.fd}")
    assert refusal.said["select"] == "ready", refusal


def test_an_epoll_ctl_costs_the_same_with_10_or_10000_registered(rows):  # rows: skipped without room for 10,000
    small, large = scale.change_costs((10, 10_000), changes=500, rounds=5)
    for row in (small, large):
        assert row.modify_us > 0 and row.register_us > 0 and row.wait_us > 0, row
    assert large.modify_us < 4 * small.modify_us, f"epoll_ctl MOD grew with the registrations: {small}, {large}"
    assert large.register_us < 4 * small.register_us, f"ADD + DEL grew with the registrations: {small}, {large}"


def test_the_descriptor_limit_and_the_descriptors_are_as_they_were(rows):
    before_limit, before_open = resource.getrlimit(resource.RLIMIT_NOFILE), scale.open_fds()
    scale.wait_costs((10, 2000), rounds=1)
    scale.select_refuses()
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == before_limit
    assert scale.open_fds() == before_open, "a measurement left descriptors open"


def test_the_helper_process_is_gone_once_the_connections_close():
    with scale.fd_limit(scale.open_fds() + 200), scale.IdleConnections(100) as connections:
        connections.grow(100)
        helper = connections._helper
        assert helper.poll() is None, "the helper holding the other ends died early"
    assert helper.returncode == 0, f"the helper ended with {helper.returncode}"


def test_a_hard_limit_too_low_is_said_in_a_sentence():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with scale.fd_limit(scale.open_fds() + 40), scale.IdleConnections(10) as connections:
        resource.setrlimit(resource.RLIMIT_NOFILE, (scale.open_fds() + 5, hard))
        with pytest.raises(scale.NotEnoughDescriptors, match="idle connections open, then"):
            connections.grow(100)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)


@pytest.mark.quick
def test_fd_limit_never_lowers_and_never_passes_the_hard_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with scale.fd_limit(10) as limit:
        assert limit == soft
    with scale.fd_limit(10**9) as limit:
        assert limit == (10**9 if hard == resource.RLIM_INFINITY else hard)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)


@pytest.mark.quick
def test_tlpis_table_has_the_published_shape():
    assert round(scale.tlpi_ratio("epoll"), 2) == 1.61
    assert round(scale.tlpi_ratio("poll")) == 1623
    assert scale.tlpi_us_per_wait()["select"] == {10: 7.3, 10_000: 9300}


def test_the_plot_and_the_result_file(rows, tmp_path):
    figure = plots.wait_costs(rows, reference=scale.tlpi_us_per_wait())
    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert "select refused (descriptor number ≥ 1024)" in labels and "epoll (TLPI, in C)" in labels
    written = bench.write_result("scale", {"preset": "test"}, rows, figure=figure, out=tmp_path, tools=())
    assert written[1].read_bytes().startswith(PNG_SIGNATURE)
    again = bench.read_result(written[0])["rows"]
    assert plots.wait_costs(again).axes, "the plot does not draw rows read back from JSON"
    with pytest.raises(ValueError, match="no rows to draw"):
        plots.wait_costs([])


def test_bench_runs_the_short_scale_preset(tmp_path, capsys):
    assert bench.main(["scale", "--out", str(tmp_path)]) == 0
    said = capsys.readouterr().out
    assert "filedescriptor out of range in select()" in said and "epoll_ctl" in said
    assert {path.name for path in tmp_path.iterdir()} == {"scale.json", "scale.png", "scale-changes.json"}
