"""How nbgrader runs a student's notebook here: only the cells grading needs, and no student can sink the run.

nbgrader's own ``Execute`` runs every cell of a notebook in one kernel.
``GradingExecute`` takes its place in ``nbgrader autograde`` (the course's
``nbgrader_config.py`` says so) and differs in three ways:

- **It runs only what grading needs** (``skip_unneeded``, on by default):
  the graded cells, the last cell (``stop_all()``: what the notebook started
  is stopped), and the cells they depend on (``epollbook.classroom.needed``).
  A skipped cell keeps no output, as if the student had not run it.
- **A cell that ends its kernel costs that cell, not the notebook.** Student
  code can call ``os._exit``, crash the interpreter, or run out of memory
  (each kernel has a memory limit: ``epollbook.classroom.kernel``). nbgrader
  would then stop grading the notebook. (A cell that ends with
  ``MemoryError`` is treated the same: what it allocated may still be held.) Here the cell gets an error output
  saying what happened, a fresh kernel is started, the cells run so far are
  run again in it silently (all but the checks, which define nothing later
  cells use, and the cells that ended a kernel), and grading goes on. If the
  cell was an answer, its check is not run: it gets the same error.
- **Output is capped** (``output_limit`` characters a cell). Output past the
  limit is dropped as it arrives, so that a loop that prints forever cannot
  fill the grader's memory or the graded notebook; and the kernel is
  stopped and replaced as above, since the printing may come from a thread
  that would go on printing into every later cell.

A cell that runs too long is interrupted, as nbgrader does (``timeout``).
"""

import asyncio
import copy
import signal

from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionComplete, CellTimeoutError, DeadKernelError
from nbclient.util import ensure_async
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import Execute
from traitlets import Bool, Integer

from epollbook.classroom.feedback import KERNEL_DIED, KERNEL_STUCK, OUT_OF_MEMORY, OUTPUT_LIMIT
from epollbook.classroom.needed import cells_to_run
from epollbook.exercises import CHECK_SUFFIX, grading


class _Lost(Exception):
    """The kernel running a cell is gone or no longer usable; ``ename`` says why."""

    def __init__(self, ename):
        super().__init__(ename)
        self.ename = ename


def error_output(ename, evalue):
    """An error output as nbgrader reads it: any error output in a graded cell makes it worth 0 points."""
    return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


WHY = {
    KERNEL_DIED: "the kernel running this notebook ended during this cell (os._exit, a crash, or more memory than "
                 "the {memory} a kernel may use); grading went on in a new kernel",
    OUTPUT_LIMIT: "more than {limit:,} characters were printed while this cell ran (by it, or by a thread an "
                  "earlier cell started), so its kernel was stopped; grading went on in a new kernel",
    OUT_OF_MEMORY: "this cell ran out of the {memory} a kernel may use (MemoryError), so its kernel was replaced, "
                   "in case something still holds that memory; grading went on in a new kernel",
    KERNEL_STUCK: "this cell did not stop when it was interrupted after its time limit, so its kernel was ended; "
                  "grading went on in a new kernel",
}


class GradingExecute(Execute):
    """nbgrader's ``Execute``, running only what grading needs and surviving what a student's code does to its kernel.

    Configured like ``Execute`` (``timeout``, ``kernel_name``...), plus
    ``skip_unneeded`` and ``output_limit``; ``memory`` is only the words for
    the limit the kernel itself enforces.
    """

    skip_unneeded = Bool(True, help="Run only the graded cells, the last cell, and what they depend on.").tag(
        config=True)
    output_limit = Integer(200_000, help="Characters of output a cell may produce before it is stopped.").tag(
        config=True)
    memory = Integer(0, help="The memory limit of a kernel, in bytes, as its launch sets it (for the words).").tag(
        config=True)

    def preprocess(self, nb, resources=None, km=None):
        """Run *nb*'s cells that grading needs, each in order; return ``(nb, resources)`` as ``Execute`` does."""
        NotebookClient.__init__(self, nb, km)  # as ExecutePreprocessor.preprocess does: a fresh client state
        self.reset_execution_trackers()
        self._check_assign_resources(resources)
        code = [index for index, cell in enumerate(nb.cells) if cell.cell_type == "code" and cell.source.strip()]
        if self.skip_unneeded and code:
            sources = [cell.source if cell.cell_type == "code" else None for cell in nb.cells]
            roots = [index for index in code if grading(nb.cells[index]).get("grade_id")] + [code[-1]]
            code = cells_to_run(sources, roots)
        pending, done, lost = list(code), [], set()
        while pending:
            with self.setup_kernel():
                reply = self.wait_for_reply(self.kc.kernel_info())
                nb.metadata["language_info"] = reply["content"]["language_info"]
                replay = [index for index in done if index not in lost and not grading(nb.cells[index]).get("grade")]
                try:
                    for index in replay:
                        self._run(index, keep=False)
                except _Lost:
                    lost.add(index)  # it did not end a kernel the first time; it does now: leave it out
                    continue
                while pending:
                    index = pending.pop(0)
                    try:
                        self._run(index, keep=True)
                        done.append(index)
                    except _Lost as reason:
                        done.append(index)
                        lost.add(index)
                        self._lose(nb, index, reason.ename, pending)
                        break
        self.set_widgets_metadata()
        return nb, self.resources

    def _run(self, index, keep):
        """Run cell *index*; keep its outputs if *keep*, else run a copy and leave the notebook as it was.

        Raises ``_Lost`` if its kernel ended, printed too much, or would not stop.
        """
        self._printed, self._over_limit = 0, False
        cell = self.nb.cells[index]
        try:
            if keep:
                self.execute_cell(cell, index, store_history=True)
            else:
                self.execute_cell(copy.deepcopy(cell), index, store_history=False)
                self.nb.cells[index] = cell
        except DeadKernelError:
            self.nb.cells[index] = cell
            raise _Lost(OUTPUT_LIMIT if self._over_limit else KERNEL_DIED) from None
        except CellTimeoutError:  # interrupted after its time limit, and still not idle
            self.nb.cells[index] = cell
            raise _Lost(KERNEL_STUCK) from None
        if self._over_limit:
            raise _Lost(OUTPUT_LIMIT)
        if any(output.get("ename") == "MemoryError" for output in cell.get("outputs", [])):
            raise _Lost(OUT_OF_MEMORY)  # what it allocated may still be held, by a name or a thread

    def _lose(self, nb, index, ename, pending):
        """Give cell *index* the error *ename*; if it was an answer, give its check the same and do not run it."""
        evalue = WHY[ename].format(memory=_size(self.memory), limit=self.output_limit)
        nb.cells[index].outputs.append(error_output(ename, evalue))
        grade_id = grading(nb.cells[index]).get("grade_id")
        for later in list(pending):
            if grade_id and grading(nb.cells[later]).get("grade_id") == grade_id + CHECK_SUFFIX:
                pending.remove(later)
                nb.cells[later].outputs = [error_output(ename, "your answer's cell: " + evalue)]

    def output(self, outs, msg, display_id, cell_index):
        """Keep an output only while the cell's outputs stay within ``output_limit`` characters."""
        if self._counted(msg):
            return super().output(outs, msg, display_id, cell_index)
        return None

    async def _async_poll_output_msg(self, parent_msg_id, cell, cell_index):
        """nbclient's loop over the kernel's output messages, counting those it would drop too.

        nbclient drops a message that belongs to another cell: output of a
        thread an earlier cell started. Such a thread may print without end
        while this cell runs; its output counts against this cell's limit.
        """
        while True:
            msg = await ensure_async(self.kc.iopub_channel.get_msg(timeout=None))
            if msg["parent_header"].get("msg_id") == parent_msg_id:
                try:
                    self.process_message(msg, cell, cell_index)
                except CellExecutionComplete:
                    return
            else:
                self._counted(msg)

    def _counted(self, msg):
        """Count *msg*'s output against the running cell's limit; False once past it.

        The stream text that crosses the limit is cut at it and kept, so that
        the student sees how their output began. Past the limit, the kernel is
        killed (the cell then ends as a lost one): interrupting is not enough
        for a thread that prints.
        """
        content = msg.get("content") or {}
        left = self.output_limit - self._printed
        self._printed += len(content.get("text") or "") + sum(len(str(value))
                                                              for value in (content.get("data") or {}).values())
        if self._printed <= self.output_limit:
            return True
        if not self._over_limit:
            self._over_limit = True
            self._killing = asyncio.ensure_future(ensure_async(self.km.signal_kernel(signal.SIGKILL)))
            if left > 0 and content.get("text"):  # one message may carry everything printed in a fraction of a second
                content["text"] = content["text"][:left] + "\n[... more output not kept]\n"
                return True
        return False


def _size(bytes_):
    """``4 GiB`` for 4 << 30; "the limit" if there is none."""
    if not bytes_:
        return "memory limit"
    return f"{bytes_ / (1 << 30):g} GiB" if bytes_ >= 1 << 30 else f"{bytes_ / (1 << 20):g} MiB"
