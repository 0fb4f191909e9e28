"""The progress bar: elapsed time and ETA, a line per tenth where the output is not a terminal."""
import io

from gpucnn.train.progress import ProgressBar, format_seconds


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_format_seconds():
    assert format_seconds(0.2) == "0s"
    assert format_seconds(42) == "42s"
    assert format_seconds(187) == "3:07"
    assert format_seconds(3723) == "1:02:03"


def test_log_gets_one_line_per_tenth_and_one_at_the_end():
    stream = io.StringIO()
    bar = ProgressBar(100, "epoch 1/3 ", stream)
    for done in range(1, 101):
        bar.update(done, loss=0.5)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10  # 10%, 20%, ... 90%, then the end
    assert lines[0].startswith("epoch 1/3 [##") and " 10/100 " in lines[0] and "loss 0.5000" in lines[0]
    assert " 100/100 " in lines[-1] and "<" not in lines[-1]  # at the end: elapsed only, no ETA
    assert "\r" not in stream.getvalue()


def test_sparse_updates_still_give_a_line_per_tenth_crossed():
    stream = io.StringIO()
    bar = ProgressBar(469, stream=stream)
    for done in list(range(10, 469, 10)) + [469]:
        bar.update(done)
    bar.close()
    assert len(stream.getvalue().splitlines()) == 10


def test_eta_is_shown_while_running(monkeypatch):
    clock = iter([0.0, 10.0])
    monkeypatch.setattr("gpucnn.train.progress.time.perf_counter", lambda: next(clock))
    stream = io.StringIO()
    bar = ProgressBar(10, stream=stream)
    bar.update(2)  # 2 steps in 10 s: 8 more take 40 s
    assert "10s<40s" in stream.getvalue()


def test_a_resumed_loop_times_only_its_own_steps(monkeypatch):
    clock = iter([0.0, 10.0])
    monkeypatch.setattr("gpucnn.train.progress.time.perf_counter", lambda: next(clock))
    stream = io.StringIO()
    bar = ProgressBar(10, stream=stream, initial=5)
    bar.update(6)  # 1 step in 10 s since the resume: 4 more take 40 s
    assert "10s<40s" in stream.getvalue() and " 6/10 " in stream.getvalue()


def test_terminal_redraws_in_place_and_final_stats_stay():
    stream = Terminal()
    bar = ProgressBar(4, "eval ", stream, min_interval=0.0)
    for done in range(1, 5):
        bar.update(done, acc=0.5)
    bar.update(4, acc=0.5, val_acc=0.25)
    bar.close()
    text = stream.getvalue()
    assert text.count("\r") >= 4 and text.endswith("\n")
    assert "val_acc 25.00%" in text.splitlines()[-1]


def test_leave_false_erases_the_bar_on_a_terminal():
    stream = Terminal()
    bar = ProgressBar(2, "validating ", stream, leave=False, min_interval=0.0)
    bar.update(2)
    bar.close()
    assert stream.getvalue().endswith("\r") and "\n" not in stream.getvalue()


def test_disabled_writes_nothing():
    stream = io.StringIO()
    bar = ProgressBar(3, stream=stream, enabled=False)
    bar.update(3)
    bar.close()
    assert stream.getvalue() == ""
