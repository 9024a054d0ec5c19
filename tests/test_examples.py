"""The article's six servers answer real clients: Python's http.client, curl, ab, and a client that sends in pieces.

Example 1 serves one request and exits, so every test starts a server of its own.
"""

import pytest

from epollbook import clients
from epollbook.launch import serve
from tools import need_tool, no_server_left_running

EXAMPLES = [f"example{n}" for n in range(1, 7)]
HELLO = b"Hello, world!"


@pytest.fixture(autouse=True)
def no_server_outlives_its_test():
    with no_server_left_running():
        yield


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_answers_python_http_client(name):
    with serve(name) as server:
        reply = clients.http_get(server)
        assert (reply.status, reply.body) == (200, HELLO), \
            f"{name} answered {reply.status} {reply.body!r}; it printed:\n{server.output}"


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_answers_curl(name):
    need_tool("curl")
    with serve(name) as server:
        body = clients.curl(server)
        assert body == HELLO.decode(), f"curl got {body!r} from {name}; it printed:\n{server.output}"


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_answers_every_request_of_ab(name):
    need_tool("ab")
    requests = 1 if name == "example1" else 200  # example 1 serves one request, then exits
    with serve(name) as server:
        result = clients.ab(server, requests=requests, concurrency=1)
        assert (result.complete, result.failed) == (requests, 0), \
            f"ab against {name}: {result}, expected {requests} complete and 0 failed"


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_answers_a_request_that_arrives_in_pieces(name):
    # Five bytes at a time, 10 ms apart: the level-triggered servers (3, 5, 6) see
    # EPOLLIN once per piece, the edge-triggered one (4) one edge per piece.
    with serve(name) as server:
        answer = clients.exchange(server, piece_size=5, pause=0.01)
        assert answer.startswith(b"HTTP/1.0 200 OK\r\n") and answer.endswith(b"\r\n\r\n" + HELLO), \
            f"{name} answered a request sent in pieces with {answer!r}; it printed:\n{server.output}"


# -- the tool requirement itself ------------------------------------------------

NOT_A_TOOL = "epollbook-no-such-program"


def test_a_missing_tool_skips_the_test_and_says_what_to_install(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        need_tool(NOT_A_TOOL)
    assert "apt-get install" in str(skipped.value), f"the skip reason says no more than: {skipped.value}"


def test_a_missing_tool_fails_the_test_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception) as failed:
        need_tool(NOT_A_TOOL)
    assert NOT_A_TOOL in str(failed.value), f"the failure does not name the tool: {failed.value}"


def test_an_installed_tool_is_found_under_any_setting_of_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert need_tool("sh").endswith("/sh"), "need_tool did not return the path of sh"
