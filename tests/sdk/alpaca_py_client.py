#!/usr/bin/env python3
"""Drive the official alpaca-py SDK against tickrelay and print what it parses.

Usage:
    alpaca_py_client.py MODE --url URL [--symbols A,B] [--count N] [--timeout S]
                        [--channels quotes,trades] [--unsubscribe-after K]
                        [--show-control] [--verbose]

MODE is one of: stocks, crypto, options, news, trading.
--url is the FULL websocket URL handed to the SDK's url_override,
e.g. ws://127.0.0.1:8765/v2/iex or ws://127.0.0.1:8765/stream.

Credentials come from --key-id/--secret-key or, preferably (argv is visible in
`ps`), from the environment: APCA_API_KEY_ID and APCA_API_SECRET_KEY.
Other env fallbacks: TICKRELAY_URL, SDK_SYMBOLS, SDK_COUNT, SDK_TIMEOUT.

Output: one JSON object per received item on stdout (type, symbol and the
fields of the SDK's pydantic model). Exit 0 after --count items. Exit 2 with a
message on stderr on timeout, or as soon as the SDK logs a warning/error (it
otherwise swallows errors and reconnects forever), or on any exception.
With --show-control, subscription acks ({"type":"subscription",...}) and data
that reached the SDK for a symbol it no longer routes ({"type":"unrouted",...})
are printed too; neither counts towards --count.
"""
import argparse
import logging
import os
import sys
import threading
import time

# observe_control() relies on alpaca-py internals (_dispatch, _handlers): the
# version is pinned in requirements-py.txt.
from alpaca.data.live import CryptoDataStream, NewsDataStream, OptionDataStream, StockDataStream
from alpaca.trading.stream import TradingStream

from clientlib import FailOnWarning, Run

DEFAULT_SYMBOLS = {
    "stocks": "AAPL,MSFT",
    "crypto": "BTC/USD,ETH/USD",
    "options": "SPY260117C00688000",
    "news": "*",
    "trading": "",
}
DEFAULT_CHANNELS = {
    "stocks": "quotes,trades,bars",
    "crypto": "quotes,trades,orderbooks",
    "options": "quotes,trades",
    "news": "news",
    "trading": "trade_updates",
}
# Wire channel name -> (subscribe method name, output type)
CHANNELS = {
    "quotes": ("subscribe_quotes", "quote"),
    "trades": ("subscribe_trades", "trade"),
    "bars": ("subscribe_bars", "bar"),
    "updatedBars": ("subscribe_updated_bars", "updated_bar"),
    "dailyBars": ("subscribe_daily_bars", "daily_bar"),
    "statuses": ("subscribe_trading_statuses", "status"),
    "orderbooks": ("subscribe_orderbooks", "orderbook"),
    "news": ("subscribe_news", "news"),
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=sorted(DEFAULT_SYMBOLS))
    p.add_argument("--url", default=os.environ.get("TICKRELAY_URL"))
    p.add_argument("--key-id", default=os.environ.get("APCA_API_KEY_ID"))
    p.add_argument("--secret-key", default=os.environ.get("APCA_API_SECRET_KEY"))
    p.add_argument("--symbols", default=os.environ.get("SDK_SYMBOLS"))
    p.add_argument("--channels", help="comma-separated wire channel names (default depends on mode)")
    p.add_argument("--count", type=int, default=int(os.environ.get("SDK_COUNT", "5")))
    p.add_argument("--timeout", type=float, default=float(os.environ.get("SDK_TIMEOUT", "20")))
    p.add_argument("--unsubscribe-after", type=int, default=0, metavar="K",
                   help="stocks only: after K items unsubscribe quotes of the first symbol")
    p.add_argument("--show-control", action="store_true")
    p.add_argument("--reconnect", action="store_true",
                   help="expect the server to close the connection: count items only after the SDK "
                        "has reconnected; print {\"type\":\"connected\",\"n\":N} per connection")
    p.add_argument("--verbose", action="store_true", help="copy the SDK's INFO logs to stderr")
    a = p.parse_args()
    if not a.url:
        p.error("--url (or TICKRELAY_URL) is required")
    if not a.key_id or not a.secret_key:
        p.error("credentials missing: set APCA_API_KEY_ID and APCA_API_SECRET_KEY (or --key-id/--secret-key)")
    if a.unsubscribe_after and a.mode != "stocks":
        p.error("--unsubscribe-after is only supported in stocks mode")
    a.symbols = [s for s in (a.symbols if a.symbols is not None else DEFAULT_SYMBOLS[a.mode]).split(",") if s]
    a.channels = [c for c in (a.channels or DEFAULT_CHANNELS[a.mode]).split(",") if c]
    return a


def model_fields(kind, item):
    """Flatten an SDK model into a JSON-able dict (timestamps as ISO strings)."""
    d = item.model_dump(mode="json")
    out = {"type": kind, "symbol": d.pop("symbol", None)}
    out.update(d)
    return out


def trade_update_fields(u):
    d = u.model_dump(mode="json")
    order = d["order"]
    return {
        "type": "trade_update",
        "event": d["event"],
        "order_id": order["id"],
        "client_order_id": order["client_order_id"],
        "symbol": order["symbol"],
        "order_status": order["status"],
        "side": order["side"],
        "price": d["price"],
        "qty": d["qty"],
        "position_qty": d["position_qty"],
        "execution_id": d["execution_id"],
        "timestamp": d["timestamp"],
    }


def make_stream(a):
    common = dict(raw_data=False, url_override=a.url)
    if a.mode == "stocks":
        return StockDataStream(a.key_id, a.secret_key, **common)
    if a.mode == "crypto":
        return CryptoDataStream(a.key_id, a.secret_key, **common)
    if a.mode == "options":
        return OptionDataStream(a.key_id, a.secret_key, **common)
    if a.mode == "news":
        return NewsDataStream(a.key_id, a.secret_key, **common)
    return TradingStream(a.key_id, a.secret_key, paper=True, **common)


def observe_control(stream, run):
    """Test instrumentation (not SDK behaviour): wrap the SDK's private _dispatch
    to print subscription acks and data messages it has no handler for."""
    original = stream._dispatch

    async def dispatch(msg):
        t = msg.get("T")
        if t == "subscription":
            run.emit({"type": "subscription", **{k: v for k, v in msg.items() if k != "T"}}, counts=False)
        elif t not in ("error", "success", "n") and "S" in msg:
            channel = {"q": "quotes", "t": "trades", "b": "bars", "o": "orderbooks"}.get(t)
            handlers = stream._handlers.get(channel, {}) if channel else {}
            if channel and msg["S"] not in handlers and "*" not in handlers:
                run.emit({"type": "unrouted", "channel": channel, "symbol": msg["S"]}, counts=False)
        await original(msg)

    stream._dispatch = dispatch


def observe_connections(stream, run):
    """Test instrumentation: alpaca-py has no public reconnect hook; a program that wants to
    backfill after a reconnect wraps the private _start_ws, which runs (connect and sign in)
    once per connection. So does this test."""
    original = stream._start_ws

    async def start_ws():
        await original()
        run.connected()

    stream._start_ws = start_ws


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

    stream = make_stream(a)

    if a.mode == "trading":
        async def on_update(u):
            run.emit(trade_update_fields(u))

        stream.subscribe_trade_updates(on_update)
    else:
        for channel in a.channels:
            if channel not in CHANNELS or not hasattr(stream, CHANNELS[channel][0]):
                sys.stderr.write("channel %r is not available in %s mode\n" % (channel, a.mode))
                return 2
            method, kind = CHANNELS[channel]

            def make_handler(kind=kind):
                async def handler(item):
                    n = run.emit(model_fields(kind, item))
                    if a.unsubscribe_after and n == a.unsubscribe_after:
                        run.unsubscribe_now.set()
                return handler

            getattr(stream, method)(make_handler(), *a.symbols)
        if a.show_control:
            observe_control(stream, run)
    if a.reconnect:
        observe_connections(stream, run)

    def run_sdk():
        try:
            stream.run()
        except BaseException as e:  # noqa: BLE001 - report anything the SDK raises
            run.fail("SDK run() raised %s: %s" % (type(e).__name__, e))
        else:
            run.fail("SDK run() returned before %d items were received" % a.count)

    threading.Thread(target=run_sdk, name="sdk", daemon=True).start()

    deadline = time.monotonic() + a.timeout
    unsubscribed = False
    finished = False
    while time.monotonic() < deadline:
        if run.done.wait(0.05):
            finished = True
            break
        if a.unsubscribe_after and not unsubscribed and run.unsubscribe_now.is_set():
            unsubscribed = True
            stream.unsubscribe_quotes(a.symbols[0])  # blocks until the SDK has sent it
            run.emit({"type": "unsubscribed", "channel": "quotes", "symbol": a.symbols[0]}, counts=False)

    with run.lock:
        if run.error:
            sys.stderr.write("alpaca_py_client %s: FAILED: %s\n" % (a.mode, run.error))
            code = 2
        elif not finished:
            sys.stderr.write("alpaca_py_client %s: FAILED: timeout after %gs, received %d of %d items\n"
                             % (a.mode, a.timeout, run.received, a.count))
            code = 2
        else:
            code = 0
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)  # the SDK's loop has no prompt shutdown; don't wait for it


if __name__ == "__main__":
    sys.exit(main())
