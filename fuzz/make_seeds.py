"""Writes the seed corpus of every fuzz target into fuzz/seeds/<target>/ from the conformance
frames (tests/conformance/alpaca_frames.json), the protocol examples, settings.toml and the Redis
messages instances exchange.

Run from the repository root with a Python that has msgpack:  python3 fuzz/make_seeds.py
"""
import json
import pathlib

import msgpack

root = pathlib.Path(__file__).resolve().parent.parent
seeds = root / "fuzz" / "seeds"


def write(target, name, data):
    d = seeds / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


frames = json.loads((root / "tests" / "conformance" / "alpaca_frames.json").read_text())
for f in frames:
    one = [f["frame"]]
    write("upstream_json", f["id"], json.dumps(one, separators=(",", ":")))
    write("upstream_msgpack", f["id"], msgpack.packb(one))
    if f["stream"] == "trading":
        # The trading stream sends single objects, not arrays.
        write("trading_frame", f["id"], json.dumps(f["frame"]))
by_stream = {}
for f in frames:
    by_stream.setdefault(f["stream"], []).append(f["frame"])
for stream, msgs in by_stream.items():
    write("upstream_json", f"all_{stream}", json.dumps(msgs))
    write("upstream_msgpack", f"all_{stream}", msgpack.packb(msgs))
for name, frame in [
    ("control", [{"T": "success", "msg": "connected"}, {"T": "success", "msg": "authenticated"}]),
    ("ack", [{"T": "subscription", "trades": ["AAPL"], "quotes": ["AAPL", "*"], "bars": []}]),
    ("error", [{"T": "error", "code": 405, "msg": "symbol limit exceeded"}]),
]:
    write("upstream_json", name, json.dumps(frame))
    write("upstream_msgpack", name, msgpack.packb(frame))

for name, frame in [
    ("authorized", {"stream": "authorization", "data": {"action": "authenticate", "status": "authorized"}}),
    ("unauthorized", {"stream": "authorization", "data": {"status": "unauthorized", "message": "access key verification failed"}}),
    ("listening", {"stream": "listening", "data": {"streams": ["trade_updates"]}}),
    ("fill", {"stream": "trade_updates", "data": {"event": "fill", "execution_id": "e1", "price": "190.5", "qty": "10",
        "position_qty": "10", "timestamp": "2026-01-20T15:04:05.123456Z",
        "order": {"id": "o1", "symbol": "AAPL", "asset_class": "us_equity", "status": "filled", "qty": "10"}}}),
    ("crypto", {"stream": "trade_updates", "data": {"event": "new", "order": {"id": "o2", "symbol": "SOLUSD",
        "asset_class": "crypto", "status": "new"}}}),
]:
    write("trading_frame", name, json.dumps(frame))

for i, msg in enumerate([
    {"action": "subscribe", "symbols": ["aapl", "SPY260117C00688000", "BTC/USD"]},
    {"action": "subscribe", "symbols": ["AAPL"], "channels": ["quotes", "trades", "bars"]},
    {"action": "unsubscribe", "symbols": ["AAPL"]},
    {"action": "subscribe", "channels": ["news"], "symbols": ["*"]},
    {"action": "subscribe", "channels": ["positions"]},
    {"action": "configure", "batch": True},
    {"action": "ping", "id": 7},
    {"action": "auth", "token": "key:secret"},
    {"action": "auth", "key": "key", "secret": "secret"},
]):
    write("browser_message", f"msg{i}", json.dumps(msg))

for i, msg in enumerate([
    {"action": "auth", "key": "k", "secret": "s"},
    {"action": "subscribe", "trades": ["AAPL"], "quotes": ["AMD", "CLDR"], "bars": ["*"]},
    {"news": None, "trades": ["AAPL"], "action": "subscribe", "quotes": [], "bars": None, "orderbooks": None},
    {"action": "unsubscribe", "quotes": ["AAPL"]},
    {"action": "listen", "data": {"streams": ["trade_updates"]}},
    {"action": "authenticate", "data": {"key_id": "k", "secret_key": "s"}},
]):
    write("sdk_message", f"json{i}", json.dumps(msg))
    write("sdk_message", f"msgpack{i}", msgpack.packb(msg))

write("settings", "committed", (root / "settings.toml").read_text())
write("settings", "env", "[accounts.main]\n[clients.algo]\nkey_id = \"a\"\nscopes = [\"market\", \"account:main\"]\n"
      "---\nTICKRELAY_CLIENT_SECRET_ALGO=s\nTICKRELAY__HTTP__PORT=9000\nTICKRELAY__DASHBOARD__SYMBOLS=AAPL,MSFT\n"
      "TICKRELAY__AUTH__ANONYMOUS_SCOPES=market\nAPCA_API_KEY_ID=k\nAPCA_API_SECRET_KEY=s\n")
write("settings", "alpaca", "[upstream]\nprovider = \"alpaca\"\ndata_url = \"ws://10.0.0.1:1\"\n[upstream.backoff]\nmax_ms = 86400000\n"
      "---\nAPCA_API_KEY_ID=k\nAPCA_API_SECRET_KEY=s\n")
# What instances read from Redis: edges' registrations, account messages, cached prices.
write("redis_message", "registration_stocks", '{"quotes":["AAPL"],"trades":["AAPL","MSFT"]}')
write("redis_message", "registration_news", '{"news":["*","TSLA"]}')
write("redis_message", "registration_crypto", '{"quotes":["BTC/USD"],"orderbooks":["ETH/USD"]}')
write("redis_message", "account_position",
      'P AAPL\n{"type":"position_update","position":{"account":"main","symbol":"AAPL","qty":"10"}}')
write("redis_message", "account_order", 'O AAPL\n{"type":"order_update","account":"main","event":"fill"}')
write("redis_message", "cached_price", '{"symbol":"AAPL","bid":150.25,"ask":150.27,"mid":150.26,'
      '"timestamp":"2024-10-19T14:30:00.123456+00:00","exchange":"IEX"}')
print("seeds written to", seeds)
