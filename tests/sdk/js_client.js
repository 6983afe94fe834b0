#!/usr/bin/env node
// Drive the official Alpaca JS SDK (@alpacahq/alpaca-trade-api) against tickrelay.
//
// Usage:
//   node js_client.js MODE --url BASE [--sdk v3|v4] [--symbols A,B]
//        [--channels quotes,trades] [--count N] [--timeout S] [--insecure]
//        [--no-check] [--reconnect] [--verbose]
//
// MODE: stocks | crypto.  --sdk picks one of the two pinned SDK versions that
// setup.sh installs side by side (npm aliases "alpaca-v3" and "alpaca-v4").
//
// --url is a BASE url such as http://127.0.0.1:8765 (no path):
//   v3: passed as `dataStreamUrl` to `new Alpaca({...})`. The v3 SDK then FORCES
//       wss:// for stocks ("wss" + url after the scheme + "/v2/iex"), so stocks
//       needs tickrelay on TLS; for crypto it only rewrites "https" to "wss" and
//       appends "/v1beta3/crypto/us", so ws:// or http:// stay plain.
//   v4: the SDK takes a full `url`; this script builds it as BASE with
//       http->ws / https->wss plus /v2/<feed> or /v1beta3/crypto/us.
// TLS trust: run node with NODE_EXTRA_CA_CERTS=/path/ca.pem (read at startup),
// or pass --insecure (sets NODE_TLS_REJECT_UNAUTHORIZED=0 in this process).
//
// Node modules: found in $SDK_NODE_DIR or --node-dir (setup.sh's <cache>/node).
// Credentials: --key-id/--secret-key or env APCA_API_KEY_ID/APCA_API_SECRET_KEY
// (preferred). Env fallbacks: TICKRELAY_URL, SDK_SYMBOLS, SDK_COUNT, SDK_TIMEOUT.
//
// Output: one JSON object per quote/trade/bar/orderbook on stdout, keys in
// snake_case, timestamp as an ISO string. Exit 0 after --count items; exit 2
// with a message on stderr on timeout, on any error the SDK reports, when the
// connection drops (the SDK would silently reconnect), or when an item fails
// the sanity checks below (the JS SDKs validate nothing; --no-check skips them).
//
// --reconnect: the server is expected to close the connection. The SDK must reconnect by
// itself; items count only once it has signed in a second time, and carry "connection": N.
// Prints {"type":"connected","n":N} per sign-in and {"type":"reconnect_hook"} when the
// SDK's own reconnect hook runs (v4: onReconnected; v3 has none: its "authenticated" state
// after "waiting to reconnect", with session.isReconnected).
"use strict";
const fs = require("fs");
const path = require("path");
const { createRequire } = require("module");

const DEFAULTS = {
  stocks: { symbols: "AAPL,MSFT", channels: "quotes,trades" },
  crypto: { symbols: "BTC/USD,ETH/USD", channels: "quotes,trades" },
};

function usage(msg) {
  process.stderr.write(`js_client: ${msg}\n(see the header of ${__filename} for usage)\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const env = process.env;
  const a = {
    mode: null,
    sdk: "v3",
    url: env.TICKRELAY_URL,
    keyId: env.APCA_API_KEY_ID,
    secretKey: env.APCA_API_SECRET_KEY,
    symbols: env.SDK_SYMBOLS,
    channels: null,
    count: Number(env.SDK_COUNT || 5),
    timeout: Number(env.SDK_TIMEOUT || 20),
    feed: "iex",
    nodeDir: env.SDK_NODE_DIR,
    insecure: false,
    verbose: false,
    check: true,
    reconnect: false,
  };
  const flags = {
    "--sdk": "sdk", "--url": "url", "--key-id": "keyId", "--secret-key": "secretKey",
    "--symbols": "symbols", "--channels": "channels", "--count": "count",
    "--timeout": "timeout", "--feed": "feed", "--node-dir": "nodeDir",
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--insecure") a.insecure = true;
    else if (arg === "--verbose") a.verbose = true;
    else if (arg === "--no-check") a.check = false;
    else if (arg === "--reconnect") a.reconnect = true;
    else if (flags[arg]) {
      if (i + 1 >= argv.length) usage(`${arg} needs a value`);
      a[flags[arg]] = argv[++i];
    } else if (!arg.startsWith("-") && a.mode === null) a.mode = arg;
    else usage(`unknown argument ${arg}`);
  }
  if (!DEFAULTS[a.mode]) usage("MODE must be stocks or crypto");
  if (a.sdk !== "v3" && a.sdk !== "v4") usage("--sdk must be v3 or v4");
  if (!a.url) usage("--url (or TICKRELAY_URL) is required");
  if (!a.keyId || !a.secretKey) usage("credentials missing: set APCA_API_KEY_ID and APCA_API_SECRET_KEY");
  if (!a.nodeDir) usage("--node-dir (or SDK_NODE_DIR) is required: the dir setup.sh installed into");
  a.count = Number(a.count);
  a.timeout = Number(a.timeout);
  a.symbols = (a.symbols || DEFAULTS[a.mode].symbols).split(",").filter(Boolean);
  a.channels = (a.channels || DEFAULTS[a.mode].channels).split(",").filter(Boolean);
  for (const c of a.channels) {
    if (!["quotes", "trades", "bars", "orderbooks"].includes(c)) usage(`unsupported channel ${c}`);
    if (c === "orderbooks" && a.mode !== "crypto") usage("orderbooks are crypto only");
  }
  return a;
}

const args = parseArgs(process.argv.slice(2));
if (args.insecure) process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";

let received = 0;
let finished = false;
let connections = 0;

// A sign-in: the first, or a reconnect.
function connected() {
  connections += 1;
  if (args.reconnect) out(JSON.stringify({ type: "connected", n: connections }));
}

// The server closed the connection: a failure unless the test expects it.
function closed(state) {
  if (args.reconnect) out(JSON.stringify({ type: "disconnected", state }));
  else fail(`connection closed (state: ${state}); the SDK would silently reconnect`);
}

function out(line) {
  fs.writeSync(1, line + "\n"); // synchronous: nothing is lost on process.exit
}

function finish(code, message) {
  if (finished) return;
  finished = true;
  if (message) fs.writeSync(2, `js_client ${args.sdk} ${args.mode}: ${message}\n`);
  process.exit(code);
}

function fail(message) {
  finish(2, `FAILED: ${message}`);
}

// SDK object -> flat snake_case JSON (v3 uses PascalCase keys, v4 camelCase).
function snake(key) {
  if (key === "S") return "symbol";
  if (key === "ID") return "id";
  if (key === "URL") return "url";
  return key.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toLowerCase();
}

function plain(value) {
  if (typeof value === "bigint") {
    return Number.isSafeInteger(Number(value)) ? Number(value) : value.toString();
  }
  if (value instanceof Date) return value.toISOString();
  if (Array.isArray(value)) return value.map(plain);
  if (value && typeof value === "object") {
    if (typeof value.toRFC3339 === "function") return value.toRFC3339();
    const o = {};
    for (const [k, v] of Object.entries(value)) o[snake(k)] = plain(v);
    return o;
  }
  return value;
}

// The JS SDKs validate nothing (a missing price or a string timestamp is passed
// through as is), so check what a program would rely on. --no-check disables it.
const REQUIRED_NUMBERS = {
  quote: ["bid_price", "bid_size", "ask_price", "ask_size"],
  trade: ["price", "size"],
  bar: ["open", "high", "low", "close", "volume"],
  orderbook: [],
};

function problems(type, item, fields) {
  const found = [];
  if (typeof fields.symbol !== "string" || fields.symbol === "") found.push("no symbol");
  for (const k of REQUIRED_NUMBERS[type]) {
    if (typeof fields[k] !== "number" || !Number.isFinite(fields[k])) found.push(`${k} is ${JSON.stringify(fields[k])}`);
  }
  if (type === "orderbook" && !(Array.isArray(fields.bids) && Array.isArray(fields.asks))) found.push("bids/asks missing");
  // A msgpack timestamp (ext -1) decodes to a Date (v3) or a StreamTimestamp whose
  // raw form has 9 fractional digits (v4); anything else means it wasn't one.
  const ts = args.sdk === "v3" ? item.Timestamp : item.timestamp;
  if (!(ts instanceof Date) || Number.isNaN(ts.getTime())) found.push(`timestamp is not a msgpack timestamp: ${JSON.stringify(ts)}`);
  else if (args.sdk === "v4" && !/\.\d{9}Z$/.test(item.timestampRaw)) found.push(`timestamp is not a msgpack timestamp: ${item.timestampRaw}`);
  return found;
}

function emit(type, item) {
  if (finished) return;
  try {
    const fields = plain(item);
    delete fields.t; // v3 keeps the wire "T" key (lower-cased by snake())
    for (const k of ["open", "high", "low", "close"]) {
      // v3 stock bars say OpenPrice..ClosePrice, its crypto bars Open..Close
      if (`${k}_price` in fields) {
        fields[k] = fields[`${k}_price`];
        delete fields[`${k}_price`];
      }
    }
    if (args.check) {
      const found = problems(type, item, fields);
      if (found.length) {
        fail(`bad ${type} from the SDK (${found.join("; ")}): ${JSON.stringify(fields)}`);
        return;
      }
    }
    // v4 has a lossless nanosecond string next to a millisecond Date: prefer it.
    if (fields.timestamp_raw) {
      fields.timestamp = fields.timestamp_raw;
      delete fields.timestamp_raw;
    }
    const { symbol, ...rest } = fields;
    const connection = args.reconnect ? { connection: connections } : {};
    out(JSON.stringify({ type, symbol, ...rest, ...connection }));
  } catch (err) {
    fail(`could not print a ${type}: ${err && err.stack ? err.stack : err}`);
    return;
  }
  if (args.reconnect && connections < 2) return;
  received += 1;
  if (received >= args.count) finish(0);
}

function wsUrl(base, p) {
  return base.replace(/\/+$/, "").replace(/^http/, "ws") + p;
}

const sdkRequire = createRequire(path.join(path.resolve(args.nodeDir), "package.json"));

function startV3() {
  const Alpaca = sdkRequire("alpaca-v3");
  const alpaca = new Alpaca({
    keyId: args.keyId,
    secretKey: args.secretKey,
    feed: args.feed,
    dataStreamUrl: args.url,
    verbose: args.verbose,
  });
  const stream = args.mode === "stocks" ? alpaca.data_stream_v2 : alpaca.crypto_stream_v1beta3;
  const on = args.mode === "stocks"
    ? { quotes: "onStockQuote", trades: "onStockTrade", bars: "onStockBar" }
    : { quotes: "onCryptoQuote", trades: "onCryptoTrade", bars: "onCryptoBar", orderbooks: "onCryptoOrderbook" };
  const sub = { quotes: "subscribeForQuotes", trades: "subscribeForTrades", bars: "subscribeForBars", orderbooks: "subscribeForOrderbooks" };
  const type = { quotes: "quote", trades: "trade", bars: "bar", orderbooks: "orderbook" };
  for (const c of args.channels) stream[on[c]]((item) => emit(type[c], item));
  stream.onConnect(() => {
    for (const c of args.channels) stream[sub[c]](args.symbols);
  });
  // v3 maps server error codes through a local table: unknown codes arrive as undefined.
  stream.onError((err) => fail(`SDK reported error: ${err === undefined ? "(unmapped server error code)" : err}`));
  stream.onStateChange((state) => {
    if (args.verbose) process.stderr.write(`state: ${state}\n`);
    if (state === "waiting to reconnect") closed(state);
    if (state === "authenticated") {
      connected();
      if (stream.session.isReconnected) out(JSON.stringify({ type: "reconnect_hook" }));
    }
  });
  stream.connect();
}

function startV4() {
  const { Alpaca } = sdkRequire("alpaca-v4");
  const alpaca = new Alpaca({ keyId: args.keyId, secret: args.secretKey });
  const stream = args.mode === "stocks"
    ? alpaca.marketData.stockStream({ feed: args.feed, url: wsUrl(args.url, `/v2/${args.feed}`), verbose: args.verbose })
    : alpaca.marketData.cryptoStream({ url: wsUrl(args.url, "/v1beta3/crypto/us"), verbose: args.verbose });
  const on = { quotes: "onQuote", trades: "onTrade", bars: "onBar", orderbooks: "onOrderbook" };
  const sub = { quotes: "subscribeForQuotes", trades: "subscribeForTrades", bars: "subscribeForBars", orderbooks: "subscribeForOrderbooks" };
  const type = { quotes: "quote", trades: "trade", bars: "bar", orderbooks: "orderbook" };
  for (const c of args.channels) stream[on[c]]((item) => emit(type[c], item));
  stream.onConnect(() => {
    for (const c of args.channels) stream[sub[c]](args.symbols);
  });
  stream.onError((err) => fail(`SDK reported error: ${err}`));
  stream.onStateChange((state) => {
    if (args.verbose) process.stderr.write(`state: ${state}\n`);
    if (state === "disconnected" || state === "waiting to reconnect") closed(state);
    if (state === "authenticated") connected();
  });
  stream.onReconnected(() => out(JSON.stringify({ type: "reconnect_hook" })));
  stream.connect();
}

process.on("uncaughtException", (err) => fail(`uncaught exception: ${err && err.stack ? err.stack : err}`));
process.on("unhandledRejection", (err) => fail(`unhandled rejection: ${err && err.stack ? err.stack : err}`));
setTimeout(() => fail(`timeout after ${args.timeout}s, received ${received} of ${args.count} items`), args.timeout * 1000);

try {
  if (args.sdk === "v3") startV3();
  else startV4();
} catch (err) {
  fail(`SDK setup threw: ${err && err.stack ? err.stack : err}`);
}
