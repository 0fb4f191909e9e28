"""A process for the run-lock tests (tests/commands/test_run_lock.py), started with the test's Python.

    python lock_worker.py train TRAIN TEST [--hold] ARGS...   `gpucnn train ARGS` on a tiny data set
    python lock_worker.py hold DIRECTORY                      hold DIRECTORY's run lock, nothing else

``train``: the loader's sample counts set to TRAIN / TEST (the fixture's tiny IDX files), then
``gpucnn train ARGS`` through the command-line entry point; with --hold, training waits after
printing HOLDING (the lock is held by then) until a line comes on stdin. ``hold``: takes the lock
with gpucnn's own code, prints HOLDING, and waits for a line on stdin (or to be killed).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from gpucnn.commands import main as gpucnn_main  # noqa: E402
from gpucnn.commands import run_lock  # noqa: E402
from gpucnn.commands import train as train_command  # noqa: E402
from gpucnn.data import datasets  # noqa: E402


def _wait_for_the_test():
    print("HOLDING", flush=True)
    sys.stdin.readline()


def main(argv):
    if argv[0] == "hold":
        with run_lock.acquire(argv[1], command="lock_worker.py hold"):
            _wait_for_the_test()
        return 0
    train, test, rest = int(argv[1]), int(argv[2]), argv[3:]
    datasets._NUM_SAMPLES.update(train=train, test=test)
    if rest and rest[0] == "--hold":
        rest = rest[1:]
        real_fit = train_command.fit

        def held_fit(*args, **kwargs):
            _wait_for_the_test()
            return real_fit(*args, **kwargs)

        train_command.fit = held_fit
    return gpucnn_main(["train", *rest])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
