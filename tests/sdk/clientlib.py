"""What the SDK client programs share: the run's state and the log handler that turns any
warning the SDK logs into a failure (the Python SDKs log errors and reconnect forever)."""
import json
import logging
import sys
import threading


class Run:
    """Shared state between the SDK's event-loop thread and the main thread."""

    def __init__(self, count):
        self.count = count
        self.received = 0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.error = None
        self.unsubscribe_now = threading.Event()

    def emit(self, obj, counts=True):
        line = json.dumps(obj, default=str)
        with self.lock:
            if self.done.is_set():
                return
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            if counts:
                self.received += 1
                if self.received >= self.count:
                    self.done.set()
        return self.received

    def fail(self, message):
        with self.lock:
            if self.error is None:
                self.error = message
            self.done.set()


class FailOnWarning(logging.Handler):
    """The SDKs log errors (and reconnect) instead of raising: treat any WARNING or worse as a
    failure."""

    def __init__(self, run):
        super().__init__(level=logging.WARNING)
        self.run = run

    def emit(self, record):
        msg = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            msg += " [%s]" % type(record.exc_info[1]).__name__
        self.run.fail("SDK logged %s from %s: %s" % (record.levelname, record.name, msg))
