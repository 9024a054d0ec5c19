"""The command line: `python -m epollbook list`, and `python -m epollbook serve NAME` with its options.

    python -m epollbook serve NAME [--host H] [--port P] [--backlog N]
"""

import http.client
import signal
import subprocess
import sys

import psutil
import pytest

from epollbook import catalog
from tools import is_gone, listening_socket, wait_for_printed

COMMAND = [sys.executable, "-m", "epollbook"]


def run(*arguments, timeout=10):
    """Run ``python -m epollbook ARGUMENTS`` to its end; return the ``CompletedProcess`` (text)."""
    return subprocess.run([*COMMAND, *arguments], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_list_names_every_server_with_its_description_one_per_line():
    listed = run("list")
    assert listed.returncode == 0, f"`list` exited with {listed.returncode}: {listed.stderr}"
    lines = listed.stdout.splitlines()
    assert len(lines) == len(catalog.SERVERS), f"expected {len(catalog.SERVERS)} lines, got:\n{listed.stdout}"
    for line, name in zip(lines, catalog.SERVERS, strict=True):
        listed_name, _, description = line.partition(" ")
        assert listed_name == name, f"expected a line for {name}, got {line!r}"
        assert description.strip() == catalog.description(name) != "", f"{name}'s line has no description: {line!r}"


def test_serve_prints_its_url_once_it_listens_and_answers_requests_until_terminated():
    server = subprocess.Popen([*COMMAND, "serve", "example2", "--port", "0"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = wait_for_printed(server, r"http://127\.0\.0\.1:(\d+)/")
        connection = http.client.HTTPConnection("127.0.0.1", int(url[1]), timeout=5)
        try:
            connection.request("GET", "/")
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        assert (response.status, body) == (200, b"Hello, world!"), f"{url[0]} answered {response.status} {body!r}"
        process = psutil.Process(server.pid)
        server.terminate()
        assert server.wait(5) == -signal.SIGTERM, f"after SIGTERM `serve` exited with status {server.returncode}"
        assert is_gone(process), f"pid {server.pid} is still {process.status()} after it was reaped"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        server.stdout.close()


def _ignoring_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a background job (`cmd &`) of a shell script starts


def test_ctrl_c_stops_a_server_started_with_sigint_ignored_as_a_background_job_is():
    server = subprocess.Popen([*COMMAND, "serve", "example2", "--port", "0"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=_ignoring_sigint)
    try:
        wait_for_printed(server, r"http://127\.0\.0\.1:(\d+)/")
        server.send_signal(signal.SIGINT)
        assert server.wait(5) == 130, f"after SIGINT `serve` exited with status {server.returncode}"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        server.stdout.close()


@pytest.mark.parametrize("arguments, complaint", [
    pytest.param(["nope"], "invalid choice: 'nope'", id="unknown NAME"),
    pytest.param(["example2", "--host", "::1"], "'::1' is not an IPv4 address", id="IPv6 host"),
    pytest.param(["example2", "--port", "70000"], "'70000' is not a port", id="port above 65535"),
    pytest.param(["example2", "--backlog", "-1"], "'-1' is not a backlog", id="negative backlog"),
    pytest.param(["example2", "--backlog", "2147483648"], "is not a backlog", id="backlog beyond a C int"),
    pytest.param(["example2", "--port", "\u00b2"], "is not a port", id="a digit that is not ASCII"),
])
def test_serve_answers_bad_arguments_with_one_line_and_a_nonzero_exit(arguments, complaint):
    refused = run("serve", *arguments)
    assert refused.returncode != 0, f"`serve {' '.join(arguments)}` exited with 0"
    assert "Traceback" not in refused.stderr, f"`serve {' '.join(arguments)}` printed a traceback:\n{refused.stderr}"
    # argparse shows its usage first; the answer itself is the one `error:` line.
    errors = [line for line in refused.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and complaint in errors[0], \
        f"expected one error line saying {complaint!r}, got:\n{refused.stderr}"


def test_serve_on_a_port_that_is_taken_says_it_cannot_listen_in_one_line():
    with listening_socket() as holder:
        port = holder.getsockname()[1]
        refused = run("serve", "example2", "--port", str(port))
    expected = f"cannot listen on 127.0.0.1:{port}: Address already in use"
    assert refused.returncode != 0, \
        f"`serve` on a taken port exited with 0; it printed:\n{refused.stdout}{refused.stderr}"
    assert refused.stderr.strip() == expected, f"expected the one line {expected!r}, got:\n{refused.stderr}"
