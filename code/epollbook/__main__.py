"""The command line: ``python -m epollbook list`` and ``python -m epollbook serve NAME [SERVER OPTIONS]``."""

import argparse
import errno
import runpy
import signal
import sys
import traceback

from epollbook import catalog
from epollbook.examples.command_line import add_address_arguments
from epollbook.lifeline import exit_with_owner


def _list(args):
    width = max(map(len, catalog.SERVERS))
    for name in catalog.SERVERS:
        print(f"{name:<{width}}  {catalog.description(name)}")
    return 0


def _serve(args):
    module = catalog.module_of(args.name)
    exit_with_owner()  # started by epollbook.launch: gone when the launcher is
    # Ctrl-C (and the launcher's interrupt()) must raise KeyboardInterrupt in the server even when this process
    # inherited SIGINT ignored, as a background job (`cmd &`) of a script does: Python keeps an inherited SIG_IGN.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # The example reads its address from the command line, as when run by hand.
    sys.argv = [module, "--host", args.host, "--port", str(args.port)]
    if args.backlog is not None:  # else the server's own default: the article's 1, or the corrected servers' 128
        sys.argv += ["--backlog", str(args.backlog)]
    sys.argv += args.server_options  # e.g. a corrected server's --idle-timeout; the server judges them
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except (Exception, KeyboardInterrupt) as error:
        if isinstance(error, OSError) and error.errno in _CANNOT_LISTEN:
            print(f"cannot listen on {args.host}:{args.port}: {error.strerror}", file=sys.stderr)
            return 1
        _print_traceback_from(catalog.source_path(args.name), error)
        return 130 if isinstance(error, KeyboardInterrupt) else 1
    return 0


# What bind() says when the address is not ours to take; a one-line answer, not a traceback.
_CANNOT_LISTEN = {errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL}


def _print_traceback_from(source, error):
    """Print *error*'s traceback from the server's own file on: runpy's frames above it teach nothing."""
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != str(source):
        tb = tb.tb_next
    traceback.print_exception(type(error), error, tb or error.__traceback__)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m epollbook", description="Run the book's servers.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("list", help="name every server, with a one-line description").set_defaults(run=_list)
    serve = commands.add_parser(
        "serve", help="run one server in the foreground (Ctrl-C stops it)",
        epilog="The corrected servers take options of their own after NAME (timeouts, limits): "
               "`python -m epollbook.servers.level --help` lists level's.")
    serve.add_argument("name", choices=list(catalog.SERVERS), metavar="NAME",
                       help="a server from `list`: " + ", ".join(catalog.SERVERS))
    # Without --backlog, each server keeps its own default.
    add_address_arguments(serve, None, "default: the server's own; 1 for the article's examples, as in the article"
                          ).set_defaults(run=_serve)
    # Options `serve` does not know go to the server itself (`serve level --idle-timeout 2`), which
    # answers those it does not know either with its own one-line error.
    args, args.server_options = parser.parse_known_args(argv)
    if args.server_options and args.command != "serve":
        parser.error(f"unrecognized arguments: {' '.join(args.server_options)}")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
