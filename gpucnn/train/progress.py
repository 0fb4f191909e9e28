"""A dependency-free progress bar for long loops (training epochs, evaluation).

On a terminal the bar is redrawn in place; on anything else (a log file, CI) it writes one
plain line each time another tenth of the loop is done and one at its end, so a log shows
progress without filling with redraws. tqdm would do the same, but it would be a new
dependency for one line of output; this bar is all we need.
"""
import sys
import time

__all__ = ["ProgressBar", "format_seconds"]


def format_seconds(seconds):
    """``42s``, ``3:07`` or ``1:02:03``: short enough for a bar, exact to the second."""
    seconds = int(round(max(seconds, 0.0)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    if minutes:
        return f"{minutes}:{secs:02d}"
    return f"{secs}s"


class ProgressBar:
    """``[######....] 120/469  0:21<0:59  loss 0.3456  acc 87.50%  1234 img/s``.

    The time field is elapsed<ETA while the loop runs and the elapsed time once it is done.

    Args:
        total: number of steps. prefix: text before the bar. stream: default sys.stderr.
        enabled: False writes nothing. leave: on a terminal, False erases the bar at ``close``
            (for a bar shown inside another loop's line).
        lines_per_loop: on a stream that is not a terminal, how many plain lines a whole loop writes
            before its end (10: one every 10%).
        initial: steps already done before this bar started (a resumed epoch): the ETA counts only the
            steps timed here.

    Example:
        >>> bar = ProgressBar(len(batches), "epoch 1/10 ")
        >>> for i, batch in enumerate(batches):
        ...     bar.update(i + 1, loss=0.25)
        >>> bar.close()
    """

    def __init__(self, total, prefix="", stream=None, enabled=True, width=24, min_interval=0.1, leave=True,
                 lines_per_loop=10, initial=0):
        self.total = max(int(total), 1)
        self.prefix = prefix
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.width = width
        self.min_interval = min_interval
        self.leave = leave
        self.lines_per_loop = lines_per_loop
        self.initial = int(initial)
        self.interactive = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started = time.perf_counter()
        self._last_draw = 0.0
        self._last_milestone = self.lines_per_loop * min(self.initial, self.total) // self.total
        self._line = ""
        self._drawn_width = 0
        self._drawn_line = ""

    def update(self, done, **stats):
        """Show ``done`` of ``total`` with named stats (floats get 4 digits, 'acc'/'val_acc' a percentage)."""
        if not self.enabled:
            return
        now = time.perf_counter()
        self._line = self._format(done, stats, now - self.started)
        if self.interactive:
            if now - self._last_draw >= self.min_interval or done >= self.total:
                self._draw(self._line)
                self._last_draw = now
            return
        # Not a terminal: a line at each new tenth; the end itself is left to close(), which knows the last stats.
        milestone = self.lines_per_loop * min(done, self.total) // self.total
        if done < self.total and milestone > self._last_milestone:
            self._last_milestone = milestone
            self.stream.write(self._line + "\n")
            self.stream.flush()

    def close(self):
        """End the bar: its last line stays (or is erased on a terminal when ``leave`` is False)."""
        if not self.enabled:
            return
        if not self._line:
            self._line = self._format(0, {}, time.perf_counter() - self.started)
        if self.interactive and not self.leave:
            self.clear()
        elif self.interactive:
            if self._line != self._drawn_line:
                self._draw(self._line)
            self.stream.write("\n")
        else:
            self.stream.write(self._line + "\n")
        self.stream.flush()

    def clear(self):
        """On a terminal, erase the bar's line (for another bar to use it); the next update draws it again."""
        if self.interactive and self._drawn_width:
            self.stream.write("\r" + " " * self._drawn_width + "\r")
            self.stream.flush()
            self._drawn_width, self._drawn_line = 0, ""

    def _draw(self, line):
        # Pad with spaces so that a shorter line fully covers the one it replaces.
        self.stream.write("\r" + line + " " * max(self._drawn_width - len(line), 0))
        self.stream.flush()
        self._drawn_width, self._drawn_line = len(line), line

    def _format(self, done, stats, elapsed):
        filled = int(self.width * min(done, self.total) / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        timed = done - self.initial
        if done >= self.total or timed <= 0:
            clock = format_seconds(elapsed)
        else:
            clock = f"{format_seconds(elapsed)}<{format_seconds(elapsed / timed * (self.total - done))}"
        parts = [f"{self.prefix}[{bar}] {done}/{self.total}", clock]
        for key, value in stats.items():
            if key in ("acc", "val_acc"):
                parts.append(f"{key} {100 * value:.2f}%")
            elif key == "img_s":
                parts.append(f"{value:.0f} img/s")
            elif isinstance(value, float):
                parts.append(f"{key} {value:.4f}")
            else:
                parts.append(f"{key} {value}")
        return "  ".join(parts)
