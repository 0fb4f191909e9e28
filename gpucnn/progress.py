"""A dependency-free progress bar for long loops (training epochs, evaluation)."""
import sys
import time

__all__ = ["ProgressBar"]


class ProgressBar:
    """``[######....] 120/469  loss 0.3456  acc 87.50%  1234 img/s``, redrawn in place on a terminal.

    On a stream that is not a terminal (a log file, CI) only the final line is written,
    so logs stay readable. ``enabled=False`` writes nothing.
    """

    def __init__(self, total, prefix="", stream=None, enabled=True, width=24, min_interval=0.1):
        self.total = max(int(total), 1)
        self.prefix = prefix
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.width = width
        self.min_interval = min_interval
        self.interactive = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_draw = 0.0
        self._line = ""

    def update(self, done, **stats):
        """Show ``done`` of ``total`` with named stats (floats get 4 digits, 'acc' a percentage)."""
        self._line = self._format(done, stats)
        now = time.perf_counter()
        if self.interactive and (now - self._last_draw >= self.min_interval or done >= self.total):
            self.stream.write("\r" + self._line)
            self.stream.flush()
            self._last_draw = now

    def close(self):
        if not self.enabled:
            return
        self.stream.write(("\r" if self.interactive else "") + self._line + "\n")
        self.stream.flush()

    def _format(self, done, stats):
        filled = int(self.width * min(done, self.total) / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        parts = [f"{self.prefix}[{bar}] {done}/{self.total}"]
        for key, value in stats.items():
            if key == "acc":
                parts.append(f"acc {100 * value:.2f}%")
            elif key == "img_s":
                parts.append(f"{value:.0f} img/s")
            elif isinstance(value, float):
                parts.append(f"{key} {value:.4f}")
            else:
                parts.append(f"{key} {value}")
        return "  ".join(parts)
