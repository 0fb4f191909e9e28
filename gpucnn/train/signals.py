"""Ctrl-C and SIGTERM during training: a flag checked at safe points, so that a step is never cut in half.

SIGTERM is what ``kill``, a batch scheduler and a container stop send; it gets what Ctrl-C gets:
the loop writes a checkpoint at the next safe point and raises ``TrainingInterrupted`` (a
KeyboardInterrupt), whose ``exit_status`` is the shell's convention (128 + the signal: 130, 143).
"""
import contextlib
import signal
import threading

__all__ = ["TrainingInterrupted", "deferred_interrupts", "HANDLED_SIGNALS"]

#: the signals training turns into a stop at the next safe point
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped at a safe point after a signal; ``signum`` is the signal, ``exit_status`` 128 + signum."""

    def __init__(self, message, signum=signal.SIGINT):
        super().__init__(message)
        self.signum = int(signum)
        self.exit_status = 128 + self.signum


class Interrupt:
    """Set by the signal handler: ``hit`` (a signal came), ``signum`` (the first one)."""

    def __init__(self):
        self.hit = False
        self.signum = None

    def __call__(self, signum, frame):
        if not self.hit:
            self.signum = signum
        self.hit = True

    def stop(self, message):
        """The exception to raise at the safe point."""
        return TrainingInterrupted(message, self.signum if self.signum is not None else signal.SIGINT)


@contextlib.contextmanager
def deferred_interrupts():
    """Yield an ``Interrupt`` that SIGINT and SIGTERM set instead of ending the process (main thread only;
    elsewhere the flag never turns and signals behave as before). The previous handlers come back after."""
    interrupt = Interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield interrupt
        return
    previous = {signum: signal.signal(signum, interrupt) for signum in HANDLED_SIGNALS}
    try:
        yield interrupt
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
