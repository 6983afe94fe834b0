#!/usr/bin/env python3
"""Drive the deprecated alpaca-trade-api (atap) Python SDK against tickrelay.

Usage:
    atap_client.py --url BASE [--symbols A,B] [--channels quotes,trades,bars]
                   [--feed iex] [--count N] [--timeout S] [--verbose]

--url is the BASE url given to Stream(data_stream_url=...), e.g.
http://127.0.0.1:8765; the SDK rewrites ^http to ws and appends /v2/<feed>.

Credentials: --key-id/--secret-key or env APCA_API_KEY_ID/APCA_API_SECRET_KEY
(preferred: argv is visible in `ps`). Env fallbacks: TICKRELAY_URL,
SDK_SYMBOLS, SDK_COUNT, SDK_TIMEOUT.

Output: one JSON object per received item on stdout. Exit 0 after --count
items; exit 2 with a message on stderr on timeout or as soon as the SDK logs a
warning/error (it logs and reconnects instead of raising).
"""
import argparse
import datetime
import logging
import os
import sys
import threading

from alpaca_trade_api.stream import Stream

from clientlib import FailOnWarning, Run

CHANNELS = {
    "quotes": ("subscribe_quotes", "quote"),
    "trades": ("subscribe_trades", "trade"),
    "bars": ("subscribe_bars", "bar"),
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=os.environ.get("TICKRELAY_URL"))
    p.add_argument("--key-id", default=os.environ.get("APCA_API_KEY_ID"))
    p.add_argument("--secret-key", default=os.environ.get("APCA_API_SECRET_KEY"))
    p.add_argument("--symbols", default=os.environ.get("SDK_SYMBOLS", "AAPL,MSFT"))
    p.add_argument("--channels", default="quotes")
    p.add_argument("--feed", default="iex")
    p.add_argument("--count", type=int, default=int(os.environ.get("SDK_COUNT", "5")))
    p.add_argument("--timeout", type=float, default=float(os.environ.get("SDK_TIMEOUT", "20")))
    p.add_argument("--verbose", action="store_true", help="copy the SDK's INFO logs to stderr")
    p.add_argument("--reconnect", action="store_true",
                   help="expect the server to close the connection: count items only after the SDK "
                        "has reconnected; print {\"type\":\"connected\",\"n\":N} per connection")
    a = p.parse_args()
    if not a.url:
        p.error("--url (or TICKRELAY_URL) is required")
    if not a.key_id or not a.secret_key:
        p.error("credentials missing: set APCA_API_KEY_ID and APCA_API_SECRET_KEY (or --key-id/--secret-key)")
    a.symbols = [s for s in a.symbols.split(",") if s]
    a.channels = [c for c in a.channels.split(",") if c]
    for c in a.channels:
        if c not in CHANNELS:
            p.error("unsupported channel %r (choose from %s)" % (c, ", ".join(CHANNELS)))
    return a


def iso_from_ns(ns):
    sec, nanos = divmod(ns, 1_000_000_000)
    return datetime.datetime.fromtimestamp(sec, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + ".%09dZ" % nanos


def fields(kind, item):
    """atap entities keep the remapped message in ._raw, where 'timestamp' is
    integer nanoseconds since the epoch (converted by the SDK's _cast)."""
    raw = dict(item._raw)
    out = {"type": kind, "symbol": raw.pop("symbol", None)}
    out.update(raw)
    ns = raw.get("timestamp")
    out["timestamp_ns"] = ns
    out["timestamp"] = iso_from_ns(ns) if isinstance(ns, int) else ns
    return out


def main():
    a = parse_args()
    run = Run(a.count, reconnect=a.reconnect)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(FailOnWarning(run))
    if a.verbose:
        h = logging.StreamHandler(sys.stderr)
        h.setLevel(logging.INFO)
        root.addHandler(h)
    threading.excepthook = lambda e: run.fail("uncaught %s in thread: %s" % (e.exc_type.__name__, e.exc_value))

    stream = Stream(key_id=a.key_id, secret_key=a.secret_key, base_url=a.url,
                    data_stream_url=a.url, data_feed=a.feed, raw_data=False)
    for channel in a.channels:
        method, kind = CHANNELS[channel]

        def make_handler(kind=kind):
            async def handler(item):
                run.emit(fields(kind, item))
            return handler

        getattr(stream, method)(make_handler(), *a.symbols)

    if a.reconnect:
        # No public reconnect hook either: _start_ws (connect and sign in) runs once per
        # connection.
        data_ws = stream._data_ws
        original = data_ws._start_ws

        async def start_ws():
            await original()
            run.connected()

        data_ws._start_ws = start_ws

    def run_sdk():
        try:
            stream.run()
        except BaseException as e:  # noqa: BLE001
            run.fail("SDK run() raised %s: %s" % (type(e).__name__, e))
        else:
            run.fail("SDK run() returned before %d items were received" % a.count)

    threading.Thread(target=run_sdk, name="sdk", daemon=True).start()
    finished = run.done.wait(a.timeout)
    with run.lock:
        if run.error:
            sys.stderr.write("atap_client: FAILED: %s\n" % run.error)
            code = 2
        elif not finished:
            sys.stderr.write("atap_client: FAILED: timeout after %gs, received %d of %d items\n"
                             % (a.timeout, run.received, a.count))
            code = 2
        else:
            code = 0
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
