"""The grading kernel: IPython's kernel, started with a memory limit.

    python PATH/TO/kernel.py --memory BYTES -f CONNECTION_FILE [kernel options...]

sets ``RLIMIT_AS`` (the address space this process and every process it
starts may map) to BYTES, then runs ``ipykernel`` with the other arguments,
as ``python -m ipykernel_launcher`` would. A student's code that fills the
memory then meets ``MemoryError`` (or its kernel ends), in its own kernel,
instead of making the machine's out-of-memory killer choose among the
class's kernels and the grader.

``epollbook.classroom.course.kernel_spec(memory)`` is the ``kernel.json``
that starts it. It runs this file by its path, not as a module of the
package, so that a kernel starts without importing the package (the
notebook's first cell imports what it needs).
"""

import os
import resource
import sys


def main(argv):
    """Set the limit that ``--memory BYTES`` (the first two of *argv*) says, then run the kernel with the rest."""
    if len(argv) < 2 or argv[0] != "--memory" or not argv[1].isdigit():
        sys.exit(f"usage: python {__file__} --memory BYTES -f CONNECTION_FILE [options]")
    memory = int(argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    sys.argv = [sys.argv[0], *argv[2:]]
    # Python put this file's folder first on the path: the classroom's modules are not the student's to import.
    # (IPython then puts the notebook's folder first, as for any kernel.)
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


if __name__ == "__main__":
    main(sys.argv[1:])
