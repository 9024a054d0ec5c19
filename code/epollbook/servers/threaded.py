"""One blocking thread per connection, at most --max-threads at once: chapter 3's first answer.

Each connection gets a thread of its own that reads, answers and closes with
plain blocking calls, so a slow client stalls only its own thread. The same
framing and limits as ``level`` and ``edge`` (``framing.py``, ``Limits``): a
whole-request deadline, an idle timeout, a bounded head, a lingering close.

Threads cost memory and scheduling, so there is a cap. When every thread is
busy the server stops calling ``accept()``: new clients wait in the listen
queue (up to its backlog; beyond that the kernel drops their SYNs and they
retry) until a thread is free. So ``--max-threads`` idle clients hold the whole
server until their request deadline ends them: a slow-loris still exhausts it.

    python -m epollbook serve threaded
    python -m epollbook.servers.threaded --port 8080 --max-threads 8 --request-timeout 3
"""

import contextlib
import socket
import sys
import threading
import time

from epollbook.servers import framing
from epollbook.servers.running import BACKLOG, Limits, main, positive_whole
from epollbook.servers.skeleton import ACCEPT_PAUSE, OUT_OF_DESCRIPTORS, RECV_SIZE

MAX_THREADS = 128
"""Connections served at once by default; the next ones wait in the listen queue."""


class ThreadedServer:
    """An HTTP server with one blocking thread per connection, at most *max_threads* at once.

    Methods for the caller, as ``EpollServer``'s: ``ThreadedServer(address,
    backlog, limits, *, show_requests=False, max_threads=MAX_THREADS)``,
    ``serve_forever()``, ``stop()`` (safe from a signal handler), ``close()``
    (wakes every connection's thread and waits a little for them).
    Instance variables: ``listener``, ``limits``, ``max_threads``,
    ``connection_count``.
    """

    def __init__(self, address=("127.0.0.1", 0), backlog=BACKLOG, limits=None, *, show_requests=False,
                 max_threads=MAX_THREADS):
        self.limits = limits or Limits()
        self.show_requests = show_requests
        self.max_threads = max_threads
        self._free_threads = threading.Semaphore(max_threads)
        self._lock = threading.Lock()
        self._connections = {}  # socket -> the thread serving it
        self._stopping = False
        self.listener = socket.create_server(address, backlog=backlog)

    def serve_forever(self):
        """Accept and hand each connection to a thread of its own, until ``stop()``."""
        while not self._stopping:
            self._free_threads.acquire()  # all busy: wait here, and let new clients wait in the queue
            if self._stopping:
                break
            try:
                sock, _ = self.listener.accept()
            except OSError as error:
                self._free_threads.release()
                if error.errno in OUT_OF_DESCRIPTORS:
                    time.sleep(ACCEPT_PAUSE)  # the connection stays queued; closing ones free descriptors
                # else EINVAL after stop()'s shutdown(), or ECONNABORTED: a client gave up while queued.
                continue
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            with self._lock:
                self._connections[sock] = thread
            thread.start()

    def _serve(self, sock):
        """Read one request from *sock*, answer it, close it; in the connection's own thread."""
        try:
            verdict = self._read_request(sock)
            if verdict is None:
                return
            if self.show_requests and verdict.head:
                print("-" * 40 + "\n" + framing.printable(verdict.head), flush=True)
            sock.settimeout(self.limits.idle_timeout)  # sendall()'s limit for the whole answer
            sock.sendall(verdict.answer)
            self._linger(sock)
        except OSError:  # a reset, a client that stopped reading, or stop() woke us: nothing to answer
            pass
        finally:
            with self._lock:
                del self._connections[sock]
            sock.close()
            self._free_threads.release()

    def _read_request(self, sock):
        """Return the ``Verdict`` on the request from *sock*, or None if it ended or timed out first."""
        received = bytearray()
        deadline = time.monotonic() + self.limits.request_timeout
        while (verdict := framing.judge(received, self.limits.max_head)) is None:
            # The whole request has one deadline: a timeout per recv() alone would let a client
            # sending one byte every few seconds stay for ever.
            left = min(deadline - time.monotonic(), self.limits.idle_timeout)
            try:
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
                chunk = sock.recv(RECV_SIZE)
            except TimeoutError:
                with contextlib.suppress(OSError):
                    sock.settimeout(0)
                    sock.send(framing.TIMED_OUT)
                return None
            if not chunk:  # the client closed before its request was complete
                return None
            received += chunk
        return verdict

    def _linger(self, sock):
        # As the epoll servers do: FIN first, then read and discard until the client closes too,
        # so that unread bytes do not turn our close() into a reset that destroys the answer.
        sock.shutdown(socket.SHUT_WR)
        drained, deadline = 0, time.monotonic() + self.limits.linger_seconds
        while drained <= self.limits.linger_bytes and (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            chunk = sock.recv(RECV_SIZE)
            if not chunk:
                return
            drained += len(chunk)

    def stop(self):
        """Make ``serve_forever()`` return: wake its ``accept()`` (shutdown) or its wait for a free thread."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # accept() now fails at once with EINVAL
        self._free_threads.release()

    @property
    def connection_count(self):
        with self._lock:
            return len(self._connections)

    def close(self, wait=2.0):
        """Wake every connection's thread, wait up to *wait* seconds for them to close, close the listener."""
        with self._lock:
            connections = dict(self._connections)
        for sock in connections:
            # shutdown() wakes a thread blocked in recv() (close() from another thread would not);
            # the thread then closes its own socket: each connection still has one close.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + wait
        for thread in connections.values():
            thread.join(max(deadline - time.monotonic(), 0))
        self.listener.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--max-threads", type=positive_whole, default=MAX_THREADS, metavar="N",
                            help=f"connections served at once; the next wait in the listen queue "
                                 f"(default {MAX_THREADS})")

    @classmethod
    def options(cls, args):
        return {"max_threads": args.max_threads}


if __name__ == "__main__":
    sys.exit(main(ThreadedServer))
