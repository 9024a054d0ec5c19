"""The built book: `jupyter-book build -W` passes, and its pages show what the servers really did.

The book is built once for this module, into a temporary folder, with every
notebook executed, exactly as `make book` builds it.
"""

import html.parser
import pathlib
import re
import subprocess
import sys
import tempfile

import pytest

from notebooks import CHAPTERS, ROOT
from tools import need_tool

JUPYTER_BOOK = pathlib.Path(sys.executable).parent / "jupyter-book"
BUILD_SECONDS = 600

# The first test to use the build pays for it: the limit covers the build and that test.
pytestmark = pytest.mark.timeout(BUILD_SECONDS + 120)



@pytest.fixture(scope="module")
def built_book():
    with tempfile.TemporaryDirectory(prefix="epollbook-build-") as output:
        finished = subprocess.run([str(JUPYTER_BOOK), "build", str(ROOT), "-W", "-n", "--keep-going",
                                   "--path-output", output], capture_output=True, text=True, timeout=BUILD_SECONDS)
        assert finished.returncode == 0, \
            f"the book did not build cleanly:\n{finished.stdout[-8000:]}\n{finished.stderr[-3000:]}"
        yield pathlib.Path(output) / "_build" / "html"


def page(built_book, name):
    return (built_book / "book" / f"{name}.html").read_text()


def pages_in_the_table_of_contents():
    return re.findall(r"file: book/(\S+)", (ROOT / "_toc.yml").read_text())


def test_the_book_builds_with_warnings_as_errors_and_has_every_page(built_book):
    listed = pages_in_the_table_of_contents()
    unlisted = sorted({path.stem for path in (ROOT / "book").glob("*.ipynb")} - set(listed))
    assert not unlisted, f"notebooks in book/ that _toc.yml does not list (the build would skip them): {unlisted}"
    for name in ["intro", *listed]:
        assert (built_book / "book" / f"{name}.html").exists(), f"no page for {name} in {built_book}"
    assert (built_book / "index.html").exists()


@pytest.mark.parametrize("chapter, outputs", [
    ("01-one-request", ["Listening on http://127.0.0.1:", "GET / HTTP/1.1", "Hello, world!",
                        "exit status: 0", "blocked in", "TIME_WAIT", "\N{HEAVY CHECK MARK}",
                        "no accept() was called", "listen(1): 2 connections complete (backlog + 1)",
                        "only part of it", "server's recv(): b''", "CLOSE_WAIT", "EADDRINUSE"]),
    ("02-serving-forever", ["KeyboardInterrupt", "ConnectionResetError", "UnicodeDecodeError",
                            "the polite client waited", "(in the queue)", "after the early close: ",
                            "CLOSE_WAIT", "accept() still waits", "accept() raised EINVAL",
                            "\N{HEAVY CHECK MARK}"]),
    ("03-why-blocking-hurts", ["behind a slow client", "It did not wait for the slow client", "idle clients",
                               "waited in the listen queue", "408 Request Timeout", "is the one that spoke",
                               "\N{HEAVY CHECK MARK}"]),
    ("04-level-triggered", ["added by the kernel: EPOLLERR|EPOLLHUP", "The same fd came back at every poll",
                            "CLOSE_WAIT", "ConnectionResetError", "registered for EPOLLOUT",
                            "never cleaned: requests, responses", "a polite client: Hello, world!",
                            "\N{HEAVY CHECK MARK}"]),
    ("05-edge-triggered", ["BlockingIOError", "returning b''", "after the event:", "EBADF", "without EPOLLEXCLUSIVE",
                           "\N{HEAVY CHECK MARK}"]),
    ("06-hang-ups", ["EPOLLIN|EPOLLRDHUP", "ECONNRESET", "SO_ERROR", "lingering close: the client received",
                     "\N{HEAVY CHECK MARK}"]),
    ("07-listen-backlog", ["waiting for accept(), backlog 2", "a SYN unanswered is sent again at 1 s",
                           "net.ipv4.tcp_abort_on_overflow = ", "the kernel applies a backlog of",
                           "request_queue_size = 5", "ListenOverflows rise", "\N{HEAVY CHECK MARK}"]),
    ("08-tcp-cork", ["What the kernel counts", "tcpi_data_segs_out", "TCPAutoCorking",
                     "TCP_NODELAY and TCP_CORK, uncork", "Where corking pays", "\N{HEAVY CHECK MARK}"]),
    ("09-tcp-nodelay", ["Set on the listener, inherited by accepted sockets", "client: two sends, Nagle on",
                        "asyncio sets it for you", "\N{HEAVY CHECK MARK}"]),
    ("10-select-poll-epoll", ["filedescriptor out of range in select()", "highest fd watched",
                              "from 10 to 10,000 descriptors, epoll", "calls per request",
                              "descriptor limit: soft", "\N{HEAVY CHECK MARK}"]),
    ("11-throughput", ["server CPU \N{MICRO SIGN}s per request", "busy share of its CPU", "Its last words:",
                       "System calls per request (", "edge, as chapter 5 left it", "server wake-ups per request",
                       "pausing all the same got", "was the connection, not the request",
                       "SO_REUSEPORT, binds to that port: Address already in use",
                       "40 connections held open: the kernel",
                       "\N{HEAVY CHECK MARK}"]),
    ("12-selectors-and-asyncio", ["DefaultSelector here is EpollSelector", "send(None) handed the loop:",
                                  "Every step served its 500 requests, 20 at a time",
                                  "kernel could not take, and the connection",
                                  "answered 13 after 13 bytes in two pieces and a half-close",
                                  "\N{HEAVY CHECK MARK}"]),
    ("errata", ["IndentationError", "UnicodeDecodeError", "[the defect shows]", "CLOSE_WAIT"]),
    ("teachers-guide", ["make-response", "serve-forever", "poll-timeout", "backlog-how-connect-ended",
                        "cork-send-corked", "nodelay-reply", "<table"]),
])
def test_chapter_pages_show_the_servers_real_outputs(built_book, chapter, outputs):
    text = page(built_book, chapter)
    missing = [output for output in outputs if output not in text]
    assert not missing, f"{chapter}.html lacks outputs the build should have produced: {missing}"


@pytest.mark.parametrize("chapter", ["03-why-blocking-hurts", "04-level-triggered", "07-listen-backlog",
                                     "09-tcp-nodelay", "10-select-poll-epoll", "11-throughput"])
def test_chapter_pictures_are_drawn_at_build_time_and_shipped(built_book, chapter):
    if chapter == "07-listen-backlog":
        need_tool("ab")  # the backlog sweep, and its picture, need ApacheBench
    pictures = re.findall(r'<img[^>]+src="([^"]+\.png)"', page(built_book, chapter))
    assert pictures, f"{chapter}.html shows no picture: its plot cell drew nothing"
    missing = [src for src in pictures if not (built_book / "book" / src).resolve().is_file()]
    assert not missing, f"{chapter}.html links pictures that were not copied into the book: {missing}"


class _SolutionBlocks(html.parser.HTMLParser):
    """Finds the <details> blocks that hide code cells, and whether each is open and holds a solution."""

    def __init__(self):
        super().__init__()
        self.blocks, self._depth = [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "details":
            if self._depth:
                self._depth += 1
            elif "above-input" in (attrs.get("class") or ""):
                self.blocks.append({"open": "open" in attrs, "text": ""})
                self._depth = 1

    def handle_endtag(self, tag):
        if tag == "details" and self._depth:
            self._depth -= 1

    def handle_data(self, data):
        if self._depth:
            self.blocks[-1]["text"] += data


@pytest.mark.parametrize("chapter", [path.stem for path in CHAPTERS])
def test_solutions_stay_hidden_until_the_reader_opens_them_in_a_real_browser(built_book, chapter):
    chromium = need_tool("chromium")
    with tempfile.TemporaryDirectory(prefix="epollbook-chromium-") as profile:
        finished = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=3000", "--dump-dom",
             (built_book / "book" / f"{chapter}.html").as_uri()],
            capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0 and "</html>" in finished.stdout, \
        f"chromium could not render {chapter}: {finished.stderr[-2000:]}"
    blocks = _SolutionBlocks()
    blocks.feed(finished.stdout)
    solutions = [block for block in blocks.blocks if "### BEGIN SOLUTION" in block["text"]]
    assert len(solutions) >= 2, \
        f"{chapter}: expected every exercise's solution in a collapsed block, found {len(solutions)}"
    assert not any(block["open"] for block in solutions), f"{chapter}: a solution block is open when the page loads"
