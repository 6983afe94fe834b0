"""What the SDK client programs share: the run's state and the log handler that turns any
warning the SDK logs into a failure (the Python SDKs log errors and reconnect forever), and,
for the reconnect tests, the count of connections the SDK opened."""
import json
import logging
import sys
import threading


class Run:
    """Shared state between the SDK's event-loop thread and the main thread."""

    def __init__(self, count, reconnect=False):
        self.count = count
        # With `reconnect`, items count only once the SDK has connected a second time.
        self.reconnect = reconnect
        self.connections = 0
        self.received = 0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.error = None
        self.unsubscribe_now = threading.Event()

    def emit(self, obj, counts=True):
        with self.lock:
            if self.done.is_set():
                return
            if counts and self.reconnect:
                obj = dict(obj, connection=self.connections)
                counts = self.connections >= 2
            line = json.dumps(obj, default=str)
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            if counts:
                self.received += 1
                if self.received >= self.count:
                    self.done.set()
        return self.received

    def connected(self):
        """The SDK opened (and signed in on) a connection: its reconnect hook, if it is not
        the first."""
        with self.lock:
            self.connections += 1
            n = self.connections
        self.emit({"type": "connected", "n": n}, counts=False)

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
        if self.run.reconnect and "restarting connection" in msg:
            # Expected in a reconnect test: the SDK saw the server close the connection.
            self.run.emit({"type": "reconnecting", "log": msg}, counts=False)
            return
        if record.exc_info and record.exc_info[1] is not None:
            msg += " [%s]" % type(record.exc_info[1]).__name__
        self.run.fail("SDK logged %s from %s: %s" % (record.levelname, record.name, msg))
