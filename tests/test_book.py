"""The built book: `jupyter-book build -W` passes, its pages show what the servers really did, and a reader's
browser finds every page, link, picture, solution, search result and notebook download in it, offline.

The book is built once for this module, as `make book` builds it, into this
test run's own folder (conftest's book_build_folder): the notebooks that
test_notebooks.py has just run, on this worker, are shown from that build's
execution cache, and the build runs any other itself. The browser tests drive
Debian's chromium (the `chromium` package) through Playwright's Python
package, which brings its own driver and downloads no browser: they skip when
chromium is absent, and fail then under CI=true. Screenshots of a few pages
are left in _build/screenshots/ (not committed; `pytest -rP` prints their paths).
"""

import functools
import html.parser
import io
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import urllib.parse

import nbformat
import PIL.Image
import psutil
import pytest

from notebooks import CHAPTERS, ROOT
from tools import is_gone, need_tool, wait_for_printed, wait_until

JUPYTER_BOOK = pathlib.Path(sys.executable).parent / "jupyter-book"
BUILD_SECONDS = 600

# The first test to use the build pays for it: the limit covers the build and that test.
pytestmark = pytest.mark.timeout(BUILD_SECONDS + 120)



@pytest.fixture(scope="module")
def built_book(book_build_folder):
    """The book built into this test run's own folder: the notebooks test_notebooks.py ran are shown from
    the build's execution cache, as a second `make book` shows them; the build runs any other itself."""
    finished = subprocess.run([str(JUPYTER_BOOK), "build", str(ROOT), "-W", "-n", "--keep-going",
                               "--path-output", str(book_build_folder)],
                              capture_output=True, text=True, timeout=BUILD_SECONDS)
    assert finished.returncode == 0, \
        f"the book did not build cleanly:\n{finished.stdout[-8000:]}\n{finished.stderr[-3000:]}"
    return book_build_folder / "_build" / "html"


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
    ("cheat-sheet", ["ConnectionAbortedError", "0x80000000", "No mask: the kernel watches",
                     "client.shutdown(SHUT_WR)"]),
    ("glossary", ['id="term-thundering-herd"', 'id="term-reuseport-group"']),
    ("teachers-guide", ["make-response", "serve-forever", "poll-timeout", "backlog-how-connect-ended",
                        "cork-send-corked", "nodelay-reply", "<table"]),
])
def test_chapter_pages_show_the_servers_real_outputs(built_book, chapter, outputs):
    text = page(built_book, chapter)
    missing = [output for output in outputs if output not in text]
    assert not missing, f"{chapter}.html lacks outputs the build should have produced: {missing}"


@pytest.mark.parametrize("chapter", ["01-one-request", "03-why-blocking-hurts", "04-level-triggered",
                                     "05-edge-triggered", "06-hang-ups", "07-listen-backlog", "09-tcp-nodelay",
                                     "10-select-poll-epoll", "11-throughput"])
def test_chapter_pictures_are_drawn_at_build_time_and_shipped(built_book, chapter):
    if chapter == "07-listen-backlog":
        need_tool("ab")  # the backlog sweep, and its picture, need ApacheBench
    pictures = re.findall(r'<img[^>]+src="([^"]+\.png)"', page(built_book, chapter))
    assert pictures, f"{chapter}.html shows no picture: its plot cell drew nothing"
    missing = [src for src in pictures if not (built_book / "book" / src).resolve().is_file()]
    assert not missing, f"{chapter}.html links pictures that were not copied into the book: {missing}"


LONGEST_OUTPUT = 40  # lines: a reader reads an output of a cell whole; a longer one is folded or shortened


def test_every_output_is_short_enough_to_read_or_folded(built_book):
    # Text outputs (printed, or a value's repr) as the build writes them; a folded one sits in a <details>.
    long = []
    for name in pages_in_the_table_of_contents():
        text = re.sub(r"<details.*?</details>", "", page(built_book, name), flags=re.DOTALL)
        outputs = re.findall(r'<div class="output (?:stream|text_plain)[^"]*">\s*<div class="highlight[^"]*"><pre>'
                             r"(.*?)</pre>", text, re.DOTALL)
        long += [f"{name}: {output.count(chr(10))} lines, starting {output[:60]!r}" for output in outputs
                 if output.count("\n") > LONGEST_OUTPUT]
    assert not long, f"outputs longer than {LONGEST_OUTPUT} lines, neither folded nor shortened:\n" + "\n".join(long)


OPENING_PICTURES = {  # the picture a chapter opens with (epollbook.diagrams), by the words its alt text starts with
    "01-one-request": "A sequence diagram: the server",
    "04-level-triggered": "An epoll instance as the kernel holds it",
    "05-edge-triggered": "Three timelines of bytes waiting at each poll",
    "06-hang-ups": "TCP states, the segments between them",
    "07-listen-backlog": "backlog + 1 connections fill the accept queue",
    "09-tcp-nodelay": "A sequence diagram of write, write, read",
    "10-select-poll-epoll": "Three rows, select, poll and epoll",
}


@pytest.mark.parametrize("chapter", list(OPENING_PICTURES))
def test_a_chapter_opens_with_its_picture_described_for_readers_who_cannot_see_it(built_book, chapter):
    images = [(re.search(r'alt="([^"]*)"', tag), re.search(r'src="([^"]+)"', tag))
              for tag in re.findall(r"<img[^>]*>", page(built_book, chapter))]
    described = [src[1] for alt, src in images if alt and src and OPENING_PICTURES[chapter] in alt[1]]
    assert described, f"{chapter}.html has no picture described as {OPENING_PICTURES[chapter]!r}"
    assert all((built_book / "book" / src).resolve().is_file() for src in described), \
        f"{chapter}.html's opening picture was not copied into the book: {described}"


# In a real browser: Debian's Chromium, driven by Playwright, reads the built book as a reader would,
# from its files (file://) and from `make serve`. Nothing is downloaded: Playwright drives the system
# browser, and every request that would leave the machine is blocked, counted and fails the tests.
#
# One browser serves the module, one tab per way of reading; each page is visited once per way and what
# it logged, linked and drew is kept for the tests that ask.

WAYS = ["file", "served"]
BROWSER_MILLISECONDS = 20_000  # the longest a page load, a click or a wait may take
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHAPTER_NAMES = [path.stem for path in CHAPTERS]
# Chapters that draw measurements; the other pages may have pictures too (the diagrams), all are checked.
PLOT_CHAPTERS = ["03-why-blocking-hurts", "04-level-triggered", "07-listen-backlog", "09-tcp-nodelay",
                 "10-select-poll-epoll", "11-throughput"]
SEARCHES = [("EPOLLET", "05-edge-triggered"), ("EPOLLRDHUP", "06-hang-ups"), ("TCP_CORK", "08-tcp-cork")]

# Console errors that come from the book's tools, not from the book: (message, where it comes from, why).
# Any other error a page logs fails the tests. Each entry says what would remove it.
KNOWN_CONSOLE_ERRORS = [
    (r"Identifier 'THEBE_JS_URL' has already been declared", r"",
     "Sphinx 7.4 writes the inline scripts sphinx-thebe adds after the builder started twice (its duplicate "
     "check compares None with ''); the second `const` is a SyntaxError. The book does not use thebe."),
]
# Read from file://, the search page still lists its results, but Sphinx 7.4 fetches each result page for
# its summary and Chromium refuses fetch() on file:// (served, the summaries are there).
KNOWN_SEARCH_ERRORS_FROM_FILES = [
    (r"^Access to fetch at 'file:.*blocked by CORS policy", r""),
    (r"^Failed to load resource: net::ERR_FAILED$", r"^file:"),
    (r"^Failed to fetch$", r""),
]


def _is_known(error, known):
    return any(re.search(message, error["text"]) and re.search(source, error["source"])
               for message, source, *_ in known)


def _unexpected_errors(errors, known=()):
    return [f"{error['text']} ({error['source'] or error['page']})" for error in errors
            if not _is_known(error, KNOWN_CONSOLE_ERRORS) and not _is_known(error, known)]


def _stays_on_this_machine(url):
    parts = urllib.parse.urlsplit(url)
    return parts.scheme in ("file", "data", "blob", "about") or parts.hostname in ("127.0.0.1", "localhost")


def _descendants():
    return {child.pid: child for child in psutil.Process().children(recursive=True)}


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium (skipped if absent, failed under CI=true), closed with every process it started."""
    chromium = need_tool("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ModuleNotFoundError:
        pytest.fail("the Python package playwright is missing: install requirements.txt (make test does)",
                    pytrace=False)
    before = set(_descendants())
    with sync_playwright() as playwright:
        # executable_path: the system browser, so Playwright needs no browser of its own.
        launched = playwright.chromium.launch(executable_path=chromium, timeout=60_000)
        try:
            yield launched
        finally:
            launched.close()
    wait_until(lambda: all(is_gone(process) for pid, process in _descendants().items() if pid not in before))
    left = [process for pid, process in _descendants().items() if pid not in before and not is_gone(process)]
    for process in left:
        process.kill()
    assert not left, f"processes the browser started outlived it: {[process.name() for process in left]}"


@pytest.fixture(scope="module")
def served_book(built_book):
    """The built book served by the Makefile's own `make serve`, on a free port of 127.0.0.1: its base URL."""
    make = need_tool("make")
    folder = built_book.parent.parent  # `make serve` serves _build/html below the folder it runs in
    with open(folder / "serve.log", "wb") as log:
        server = subprocess.Popen(
            [make, "--no-print-directory", "-f", str(ROOT / "Makefile"), "serve", f"PYTHON={sys.executable}",
             "HOST=127.0.0.1", "PORT=0"],
            cwd=folder, stdout=subprocess.PIPE, stderr=log, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # so its "Serving HTTP on" line reaches us at once
    try:
        announced = wait_for_printed(server, r"Serving HTTP on \S+ port (\d+)", timeout=30)
        started = psutil.Process(server.pid).children(recursive=True)
        yield f"http://127.0.0.1:{announced.group(1)}/"
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # make and the server it started share the process group
        server.wait(timeout=10)
        server.stdout.close()
    _, alive = psutil.wait_procs(started, timeout=10)
    assert not alive, f"`make serve` left its server running after SIGTERM: {alive}"


class Reader:
    """One browser tab reading the built book one way: from *base* (a file:// or http:// URL of its top).

    ``visit(name)`` opens a page of the table of contents once and keeps what it logged, linked and drew;
    ``open(path)`` opens any page afresh; ``errors`` and ``blocked`` hold what every page it opened logged
    as an error and tried to fetch from outside this machine.
    """

    def __init__(self, browser, way, base, root):
        self.way, self.base, self.root = way, base, root
        self.errors, self.blocked, self.visits = [], [], {}
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        self.context.set_default_timeout(BROWSER_MILLISECONDS)
        self.context.route("**/*", self._only_this_machine)
        self.context.on("console", self._console)
        self.context.on("weberror", lambda error: self._error(error.page, str(error.error), ""))
        self.page = self.context.new_page()

    def _only_this_machine(self, route):
        if _stays_on_this_machine(route.request.url):
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort("blockedbyclient")

    def _console(self, message):
        if message.type == "error":
            self._error(message.page, message.text, message.location.get("url", ""))

    def _error(self, page, text, source):
        self.errors.append({"page": page.url.split("#")[0] if page else "", "text": text, "source": source})

    def url(self, path):
        return urllib.parse.urljoin(self.base, path)

    def path(self, url):
        """The file in the built book *url* names (query and fragment dropped), or None if it is outside."""
        address = url.split("#")[0].split("?")[0]
        if not address.startswith(self.base):
            return None
        relative = urllib.parse.unquote(address[len(self.base):])
        if relative == "" or relative.endswith("/"):
            relative += "index.html"
        return self.root / relative

    def name(self, url):
        """The name of the book's page at *url* (``04-level-triggered``)."""
        return pathlib.PurePosixPath(urllib.parse.urlsplit(url).path).stem

    def open(self, path):
        """Open the page at *path* (relative to the book's top) in the tab; raise if it did not come."""
        response = self.page.goto(self.url(path))
        assert response is None or response.ok, f"{response.url} answered {response.status} ({self.way})"
        return self.page

    def errors_on(self, url):
        return [error for error in self.errors if error["page"] == url.split("#")[0]]

    def visit(self, name):
        """What page *name* of the table of contents showed, from one visit: its URL, every link (absolute),
        image and plot, and its 'next' and 'previous' buttons."""
        if name not in self.visits:
            page = self.open(f"book/{name}.html")
            self.visits[name] = {
                "url": page.url,
                "links": page.eval_on_selector_all("a[href]", "links => links.map(link => link.href)"),
                # "load" has fired, so every picture has arrived or failed.
                "images": page.eval_on_selector_all("img", """images => images.map(image => ({
                    src: image.currentSrc || image.src, width: image.naturalWidth, height: image.naturalHeight}))"""),
                "plots": [self._plot(plot) for plot in page.locator(".cell_output img").all()],
                "next": self._button(page.locator("a.right-next")),
                "previous": self._button(page.locator("a.left-prev")),
            }
        return self.visits[name]

    @staticmethod
    def _plot(image):
        image.scroll_into_view_if_needed()
        box = image.bounding_box()
        return {"src": image.get_attribute("src"), "box": box,
                "size": image.evaluate("image => [image.naturalWidth, image.naturalHeight]"),
                # An element with no area cannot be photographed: it has no colour at all.
                "colours": _colours_in(image.screenshot()) if box and box["width"] and box["height"] else 0}

    @staticmethod
    def _button(link):
        return link.count() and {"href": link.first.evaluate("link => link.href"), "visible": link.first.is_visible()}

    def close(self):
        self.context.close()


@pytest.fixture(scope="module")
def file_reader(browser, built_book):
    reader = Reader(browser, "file", built_book.as_uri() + "/", built_book)
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def served_reader(browser, built_book, served_book):
    reader = Reader(browser, "served", served_book, built_book)
    yield reader
    reader.close()


@pytest.fixture(params=WAYS)
def reader(request):
    """The book read both ways: from its files, then as `make serve` serves it."""
    return request.getfixturevalue(f"{request.param}_reader")


class _Ids(html.parser.HTMLParser):
    """The ids (and old-style anchor names) a page defines: what a link's #fragment may point to."""

    def __init__(self):
        super().__init__()
        self.ids = set()

    def handle_starttag(self, tag, attrs):
        self.ids.update(value for name, value in attrs if name in ("id", "name") and value)


@functools.cache
def _ids_in(path):
    parser = _Ids()
    parser.feed(path.read_text(errors="replace"))
    return parser.ids


TABLE_OF_CONTENTS = ["intro", *pages_in_the_table_of_contents()]


@pytest.mark.parametrize("name", TABLE_OF_CONTENTS)
def test_every_page_loads_with_no_console_error(reader, name):
    visit = reader.visit(name)
    unexpected = _unexpected_errors(reader.errors_on(visit["url"]))
    assert not unexpected, f"{name}.html ({reader.way}) logged errors in the browser's console: {unexpected}"


@pytest.mark.parametrize("name", TABLE_OF_CONTENTS)
def test_every_link_of_a_page_leads_to_a_page_and_anchor_that_exist(reader, name):
    broken = []
    for link in reader.visit(name)["links"]:
        if not _stays_on_this_machine(link):
            continue  # a link to the web (or mailto:): nothing to check offline
        target = reader.path(link)
        if target is None or not target.is_file():
            broken.append(f"{link} (no such file)")
        elif (fragment := urllib.parse.unquote(urllib.parse.urlsplit(link).fragment)) and \
                target.suffix == ".html" and fragment not in _ids_in(target):
            broken.append(f"{link} (no #{fragment} in {target.name})")
    assert not broken, f"{name}.html ({reader.way}) has broken links: {broken}"


@pytest.mark.parametrize("name", TABLE_OF_CONTENTS)
def test_every_image_of_a_page_arrives(reader, name):
    broken = [image["src"] for image in reader.visit(name)["images"] if not image["width"] or not image["height"]]
    assert not broken, f"{name}.html ({reader.way}) has images the browser could not show: {broken}"


def test_next_and_previous_walk_the_whole_book_in_table_of_contents_order_both_ways(reader):
    def walk(start, direction):
        names = [start]
        while (button := reader.visit(names[-1])[direction]) and len(names) <= len(TABLE_OF_CONTENTS):
            assert button["visible"], f"{names[-1]}.html ({reader.way}): its '{direction}' button cannot be seen"
            names.append(reader.name(button["href"]))
        return names

    forward = walk(TABLE_OF_CONTENTS[0], "next")
    assert forward == TABLE_OF_CONTENTS, f"'next' from the first page ({reader.way}) visits {forward}"
    backward = walk(TABLE_OF_CONTENTS[-1], "previous")
    assert backward == TABLE_OF_CONTENTS[::-1], f"'previous' from the last page ({reader.way}) visits {backward}"
    # The buttons work when clicked, not only as links.
    for start, button, arrival in [(0, "a.right-next", 1), (-1, "a.left-prev", -2)]:
        page = reader.open(f"book/{TABLE_OF_CONTENTS[start]}.html")
        page.locator(button).first.click()
        page.wait_for_load_state()
        assert reader.name(page.url) == TABLE_OF_CONTENTS[arrival], \
            f"clicking {button} on {TABLE_OF_CONTENTS[start]}.html ({reader.way}) led to {page.url}"


def _search(reader, word):
    """Type *word* in the search box of the first page, as a reader does; return the results page."""
    page = reader.open(f"book/{TABLE_OF_CONTENTS[0]}.html")
    page.locator("button.search-button__button:visible").first.click()
    box = page.locator("input[name=q]:visible").first
    box.fill(word)
    box.press("Enter")
    page.wait_for_url("**/search.html?q=*")
    # Sphinx's search runs in JavaScript over searchindex.js and says when it has finished.
    page.locator("#search-results .search-summary", has_text="Search finished").wait_for()
    return page


@pytest.mark.parametrize("word, chapter", SEARCHES)
def test_search_finds_a_word_and_leads_to_its_chapter(reader, word, chapter):
    page = _search(reader, word)
    results = page.locator("#search-results ul.search li a")
    found = [reader.name(href) for href in results.evaluate_all("links => links.map(link => link.href)")]
    assert chapter in found, f"searching {word} ({reader.way}) found {found or 'nothing'}, not {chapter}"
    errors = _unexpected_errors(reader.errors_on(page.url),
                                KNOWN_SEARCH_ERRORS_FROM_FILES if reader.way == "file" else ())
    assert not errors, f"searching {word} ({reader.way}) logged errors in the console: {errors}"
    results.nth(found.index(chapter)).click()
    page.wait_for_load_state()
    assert reader.name(page.url) == chapter, f"the search result for {chapter} led to {page.url}"
    assert word in page.locator("article").inner_text(), f"{chapter}.html, reached by searching, lacks {word}"


def _solution_cells(chapter):
    notebook = json.loads((ROOT / "book" / f"{chapter}.ipynb").read_text())
    return sum("### BEGIN SOLUTION" in "".join(cell["source"]) for cell in notebook["cells"]
               if cell["cell_type"] == "code")


@pytest.mark.parametrize("chapter", CHAPTER_NAMES)
def test_every_solution_is_hidden_until_the_reader_opens_it(file_reader, chapter):
    page = file_reader.open(f"book/{chapter}.html")
    solutions = page.locator("details.above-input", has_text="### BEGIN SOLUTION")
    expected = _solution_cells(chapter)
    assert expected >= 2, f"{chapter}.ipynb has {expected} solution cells; every chapter has exercises"
    shown = page.locator(".cell_input", has_text="### BEGIN SOLUTION").count() - solutions.count()
    assert solutions.count() == expected and not shown, \
        f"{chapter}.html folds {solutions.count()} of its {expected} solutions ({shown} shown openly)"
    for number, solution in enumerate(solutions.all(), 1):
        code = solution.locator(".cell_input")
        assert not code.is_visible(), f"{chapter}: solution {number} is visible before it is clicked"
        solution.locator("summary").click()
        assert code.is_visible() and solution.get_attribute("open") is not None, \
            f"{chapter}: solution {number} is still hidden after a click on 'Show code cell source'"
        assert solution.get_by_text("### BEGIN SOLUTION").first.is_visible(), \
            f"{chapter}: solution {number} opened, but its code cannot be seen"


def _colours_in(png):
    with PIL.Image.open(io.BytesIO(png)) as image:
        return len(image.convert("RGB").getcolors(maxcolors=1 << 24))


@pytest.mark.parametrize("name", TABLE_OF_CONTENTS)
def test_every_plot_is_drawn_on_screen(reader, name):
    if name == "07-listen-backlog":
        need_tool("ab")  # the backlog sweep, and its picture, need ApacheBench
    plots = reader.visit(name)["plots"]
    if name in PLOT_CHAPTERS:
        assert plots, f"{name}.html shows no plot: its plot cell drew nothing"
    for plot in plots:
        box, (width, height) = plot["box"], plot["size"]
        assert width and height and box and box["width"] > 50 and box["height"] > 50, \
            f"{name}.html ({reader.way}): plot {plot['src']} is {width}x{height} px, drawn in {box}"
        # A drawn plot has axes, text and lines, antialiased; an empty or failed picture is one or two colours.
        assert plot["colours"] > 16, \
            f"{name}.html ({reader.way}): plot {plot['src']} shows {plot['colours']} colours on screen: blank"


NOTEBOOK_PAGES = [name for name in TABLE_OF_CONTENTS if (ROOT / "book" / f"{name}.ipynb").exists()]


def _is_a_notebook(text):
    """Raise (saying why) unless *text* is a valid notebook with code in it."""
    notebook = nbformat.reads(text, as_version=4)
    nbformat.validate(notebook)
    assert any(cell.cell_type == "code" for cell in notebook.cells), "a notebook with no code cell"


@pytest.mark.parametrize("name", NOTEBOOK_PAGES)
def test_every_notebook_page_links_its_notebook_for_download(reader, name):
    links = [link for link in reader.visit(name)["links"] if link.endswith(".ipynb")]
    assert [reader.name(link) for link in links] == [name], \
        f"{name}.html ({reader.way}) links these notebooks for download: {links}"
    _is_a_notebook(reader.path(links[0]).read_text())


def test_the_download_button_gives_the_pages_notebook(reader, tmp_path):
    chapter = CHAPTER_NAMES[0]
    page = reader.open(f"book/{chapter}.html")
    page.locator(".dropdown-download-buttons button.dropdown-toggle").click()
    link = page.locator("a.btn-download-source-button", has_text=".ipynb")
    assert link.is_visible(), f"{chapter}.html ({reader.way}): the download menu shows no .ipynb"
    # Served, the notebook downloads; from a file, the browser shows it in a new tab.
    arrived = []
    page.once("download", lambda download: arrived.append(download))
    reader.context.once("page", lambda tab: arrived.append(tab))
    link.click()
    wait_until(lambda: arrived or page.wait_for_timeout(50), timeout=BROWSER_MILLISECONDS / 1000)
    assert arrived, f"{chapter}.html ({reader.way}): clicking .ipynb neither downloaded nor opened anything"
    if hasattr(arrived[0], "save_as"):
        arrived[0].save_as(tmp_path / "downloaded.ipynb")
        where, text = arrived[0].url, (tmp_path / "downloaded.ipynb").read_text()
    else:
        arrived[0].wait_for_load_state()
        where, text = arrived[0].url, arrived[0].evaluate("() => document.body.innerText")
        arrived[0].close()
    assert where.endswith(f"/{chapter}.ipynb"), f"{chapter}.html ({reader.way}): its .ipynb link gave {where}"
    _is_a_notebook(text)


def test_screenshots_of_key_pages_are_kept(file_reader, served_reader):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = file_reader.open(f"book/{TABLE_OF_CONTENTS[0]}.html")
    shots = {"intro.png": page.screenshot()}
    page = file_reader.open("book/04-level-triggered.html")
    page.locator(".cell_output img").last.scroll_into_view_if_needed()  # the event timeline, measured
    shots["04-level-triggered-plot.png"] = page.screenshot()
    # Served, so that the results show their summaries (from file://, Sphinx cannot fetch them).
    shots["search-EPOLLET.png"] = _search(served_reader, "EPOLLET").screenshot()
    for name, png in shots.items():
        (SCREENSHOTS / name).write_bytes(png)
        assert _colours_in(png) > 16, f"the screenshot {name} is blank"
    # Shown with the test's output (pytest -rP); the folder is always the same.
    print(f"screenshots of the book: {', '.join(str(SCREENSHOTS / name) for name in shots)}")


def test_the_book_reads_offline_no_request_leaves_the_machine(reader):
    for name in TABLE_OF_CONTENTS:
        reader.visit(name)
    _search(reader, "epoll")
    # Every page any test opened this way went through the same tab, so this counts them all.
    assert not reader.blocked, \
        f"reading the book ({reader.way}) asked the network for {len(reader.blocked)} things: {reader.blocked}"
