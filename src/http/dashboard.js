"use strict";
const config = JSON.parse(document.getElementById("config").textContent);
const $ = (id) => document.getElementById(id);
const OCC = /^([A-Z]{1,6})(\d{6})([CP])(\d{8})$/;
const SPARK_SECONDS = 300;

// ---- state -------------------------------------------------------------------------------
const stored = JSON.parse(localStorage.getItem("tickrelay.symbols") || "null");
const symbols = new Set(stored || config.symbols);
// Prices, and trading statuses so a halted symbol shows as such.
const PRICE_CHANNELS = ["quotes", "statuses"];
const GAP_MARK_MS = 60000;     // how long a symbol stays marked after a gap
const quotes = new Map();      // symbol -> {bid, ask, mid, last, ts, stale, first, points: [[t, mid]]}
const feeds = new Map();       // feed -> {status, details, retryAt}
let token = sessionStorage.getItem("tickrelay.token") || "";
let scopes = [];
let ws = null;
let retry = 500;
const fills = [];
let account = null;            // the account shown (id)

function saveSymbols() { localStorage.setItem("tickrelay.symbols", JSON.stringify([...symbols])); }
function isOption(s) { return OCC.test(s); }

// ---- formatting -------------------------------------------------------------------------
function fmt(v, digits) {
  if (v === null || v === undefined || v === "") return "–";
  const n = Number(v);
  if (!Number.isFinite(n)) return "–";
  if (digits !== undefined) return n.toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
  if (n !== 0 && Math.abs(n) < 1) return n.toPrecision(4);
  return n.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}
function money(v) { return v === null || v === undefined ? "–" : "$" + fmt(v, 2); }
function signClass(n) { return n > 0 ? "up" : n < 0 ? "down" : ""; }
function cell(tr, cls, text) { const td = document.createElement("td"); if (cls) td.className = cls; td.textContent = text; tr.appendChild(td); return td; }

// ---- watchlist ----------------------------------------------------------------------------
function rowOf(symbol) {
  let tr = document.querySelector(`#watchlist tr[data-symbol="${CSS.escape(symbol)}"]`);
  if (tr) return tr;
  tr = document.createElement("tr");
  tr.dataset.symbol = symbol;
  cell(tr, "sym", symbol);
  for (const c of ["bid", "ask", "mid", "last", "chg", "spark", "age"]) cell(tr, c, "–");
  const rm = document.createElement("td");
  const b = document.createElement("button");
  b.className = "remove"; b.title = "Remove " + symbol; b.textContent = "×";
  b.addEventListener("click", () => removeSymbol(symbol));
  rm.appendChild(b); tr.appendChild(rm);
  $("watchlist").tBodies[0].appendChild(tr);
  $("watch-count").textContent = $("watchlist").tBodies[0].rows.length + " symbols";
  return tr;
}

function flash(td, dir) {
  td.classList.remove("flash-up", "flash-down");
  void td.offsetWidth; // restart the animation
  td.classList.add(dir > 0 ? "flash-up" : "flash-down");
}

function spark(points) {
  if (points.length < 2) return "";
  const t0 = points[0][0], t1 = points[points.length - 1][0];
  let lo = Infinity, hi = -Infinity;
  for (const [, v] of points) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  const w = 80, h = 18, span = Math.max(hi - lo, 1e-9), dt = Math.max(t1 - t0, 1);
  const pts = points.map(([t, v]) => `${((t - t0) / dt * w).toFixed(1)},${(h - 1 - (v - lo) / span * (h - 2)).toFixed(1)}`);
  return `<svg width="${w}" height="${h}" viewBox="0 0 ${w} ${h}"><polyline points="${pts.join(" ")}"/></svg>`;
}

function showPrice(u) {
  const s = u.symbol;
  let q = quotes.get(s);
  if (!q) { q = { first: null, points: [] }; quotes.set(s, q); }
  const prevMid = q.mid, prevLast = q.last;
  Object.assign(q, { bid: u.bid_price, ask: u.ask_price, mid: u.mid_price, last: u.last_price,
                     volume: u.volume, ts: u.timestamp ? Date.parse(u.timestamp) : null, stale: !!u.stale });
  if (q.first === null && Number.isFinite(u.mid_price) && u.mid_price > 0) q.first = u.mid_price;
  // The upstream was lost before this update: prices may be missing; marked for a minute.
  if (u.gap) q.gapAt = Date.now();
  const now = Date.now();
  if (Number.isFinite(u.mid_price) && u.mid_price > 0) {
    const lastPoint = q.points[q.points.length - 1];
    if (!lastPoint || now - lastPoint[0] >= 1000) q.points.push([now, u.mid_price]);
    else lastPoint[1] = u.mid_price;
    while (q.points.length && now - q.points[0][0] > SPARK_SECONDS * 1000) q.points.shift();
  }
  if (isOption(s)) { showOption(s, q, prevMid); return; }
  const tr = rowOf(s);
  const c = tr.cells;
  c[1].textContent = fmt(q.bid); c[2].textContent = fmt(q.ask); c[3].textContent = fmt(q.mid);
  c[4].textContent = fmt(q.last);
  if (q.first) {
    let chg = (q.mid - q.first) / q.first * 100;
    if (Math.abs(chg) < 0.005) chg = 0; // no "-0.00%"
    c[5].textContent = (chg > 0 ? "+" : "") + chg.toFixed(2) + "%";
    c[5].className = "chg " + signClass(chg);
  }
  c[6].innerHTML = spark(q.points);
  if (prevMid !== undefined && q.mid !== prevMid) flash(c[3], q.mid - prevMid);
  if (prevLast !== undefined && q.last !== prevLast && q.last !== null) flash(c[4], q.last - (prevLast || q.last));
  tr.classList.toggle("stale", q.stale);
  tr.classList.toggle("halted", !!u.halted);
}

// ---- option chain -------------------------------------------------------------------------
function showOption(s, q, prevMid) {
  const m = OCC.exec(s);
  if (!m) return;
  const [, root, ymd, cp, strikeRaw] = m;
  const strike = Number(strikeRaw) / 1000;
  const expiry = `20${ymd.slice(0, 2)}-${ymd.slice(2, 4)}-${ymd.slice(4, 6)}`;
  const key = `${root} ${expiry} ${strike}`;
  const body = $("chain").tBodies[0];
  let group = body.querySelector(`tr.group[data-group="${CSS.escape(root + " " + expiry)}"]`);
  if (!group) {
    group = document.createElement("tr"); group.className = "group"; group.dataset.group = root + " " + expiry;
    const td = cell(group, "sym", `${root} · expires ${expiry}`); td.colSpan = 9; td.style.textAlign = "left";
    body.appendChild(group);
  }
  let tr = body.querySelector(`tr[data-key="${CSS.escape(key)}"]`);
  if (!tr) {
    tr = document.createElement("tr"); tr.dataset.key = key; tr.dataset.strike = strike;
    for (let i = 0; i < 9; i++) cell(tr, i === 4 ? "strike" : "", i === 4 ? fmt(strike) : "–");
    // Strikes in order under their group.
    let after = group;
    for (let n = group.nextElementSibling; n && !n.classList.contains("group"); n = n.nextElementSibling) {
      if (Number(n.dataset.strike) < strike) after = n;
    }
    after.after(tr);
  }
  tr.dataset[cp === "C" ? "call" : "put"] = s;
  const base = cp === "C" ? 0 : 5;
  const c = tr.cells;
  c[base].textContent = fmt(q.bid); c[base + 1].textContent = fmt(q.ask);
  c[base + 2].textContent = fmt(q.last); c[base + 3].textContent = fmt(q.volume, 0);
  if (prevMid !== undefined && q.mid !== prevMid) flash(c[base], q.mid - prevMid);
  $("chain-empty").hidden = true;
}

// ---- feeds and accounts status bar --------------------------------------------------------
function showFeed(status, details) {
  const f = feeds.get(details.feed) || {};
  f.status = status; f.details = details;
  f.retryAt = details.next_retry_ms ? Date.now() + details.next_retry_ms : null;
  feeds.set(details.feed, f);
  renderStatus();
}

function renderStatus() {
  const bar = $("status");
  for (const [name, f] of feeds) {
    let el = bar.querySelector(`.feed[data-feed="${CSS.escape(name)}"]`);
    if (!el) {
      el = document.createElement("span"); el.className = "feed"; el.dataset.feed = name;
      el.innerHTML = '<b></b> <span class="st"></span><span class="extra"></span>';
      el.querySelector("b").textContent = name;
      bar.appendChild(el);
    }
    el.dataset.state = f.status;
    el.querySelector(".st").textContent = f.status;
    const d = f.details || {};
    const extra = [];
    if (f.retryAt) extra.push(`retry in ${Math.max(0, (f.retryAt - Date.now()) / 1000).toFixed(1)} s`);
    if (d.circuit_state && d.circuit_state !== "closed") extra.push(`circuit ${d.circuit_state}`);
    if (d.reconnect_attempts) extra.push(`${d.reconnect_attempts} reconnects`);
    el.querySelector(".extra").textContent = extra.length ? " · " + extra.join(" · ") : "";
    el.title = d.last_error ? `last error: ${d.last_error}` : `${d.provider || ""}`;
  }
}

// ---- news ---------------------------------------------------------------------------------
function showNews(n) {
  const li = document.createElement("li");
  // Only web links: a javascript: or data: URL from upstream or Redis never becomes a link.
  const link = typeof n.url === "string" && /^https?:\/\//i.test(n.url);
  const a = document.createElement(link ? "a" : "span");
  if (link) { a.href = n.url; a.target = "_blank"; a.rel = "noopener noreferrer"; }
  a.textContent = n.headline;
  const meta = document.createElement("div"); meta.className = "meta";
  const when = n.created_at ? new Date(n.created_at).toLocaleTimeString() : "";
  meta.textContent = [when, n.source, (n.symbols || []).join(" ")].filter(Boolean).join(" · ");
  li.append(a, meta);
  const list = $("news");
  list.prepend(li);
  while (list.children.length > 50) list.lastChild.remove();
  $("news-empty").hidden = true;
}

// ---- provider badges ----------------------------------------------------------------------
let replayTimer = null;
function showProvider(provider) {
  $("badge-sim").hidden = provider !== "simulator";
  $("badge-replay").hidden = provider !== "replay";
  if (provider === "replay" && !replayTimer) {
    showReplay();
    replayTimer = setInterval(showReplay, 1000);
  }
}

// The replay's clock (the recorded time of the frame last played), speed and state.
async function showReplay() {
  try {
    const r = (await api("/api/v1/status")).replay;
    if (!r) return;
    const clock = r.clock ? new Date(r.clock).toLocaleString() : "–";
    const speed = r.speed === "max" ? "max" : "×" + r.speed;
    $("replay-clock").textContent = `${clock} · ${speed} · ${r.state}`;
  } catch (_) { /* the next tick tries again */ }
}

// ---- account ------------------------------------------------------------------------------
function api(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  return fetch(path, { headers, cache: "no-store" }).then((r) => r.ok ? r.json() : Promise.reject(r.status));
}

let accountTimer = null;
// Each load is numbered: the answer to an older one (say, the anonymous load before a sign-in,
// answered after the signed-in one) is dropped instead of hiding the newer.
let accountLoad = 0;
async function loadAccount() {
  const mine = ++accountLoad;
  const stale = () => mine !== accountLoad;
  try {
    const list = await api("/api/v1/accounts");
    if (stale()) return;
    const ids = list.accounts.map((a) => a.id);
    if (!ids.includes(account)) account = ids.length ? ids[0] : null;
    // Several accounts the viewer may see: a picker.
    const pick = $("acct-pick");
    pick.hidden = ids.length < 2;
    if (pick.options.length !== ids.length || ids.some((id, i) => pick.options[i].value !== id)) {
      pick.replaceChildren(...ids.map((id) => new Option(id, id)));
    }
    pick.value = account || "";
    if (!account) { showAccount(null); return; }
    const d = await api(`/api/v1/accounts/${encodeURIComponent(account)}/dashboard`);
    if (stale()) return;
    showAccount(d);
  } catch (e) {
    if (stale()) return;
    showAccount(null, e);
    // 503: the account has not been loaded yet (the daemon has just started); no status at all:
    // the request failed on its way (a connection closed under it). Look again soon.
    if (e === 503 || typeof e !== "number") {
      clearTimeout(accountTimer); accountTimer = setTimeout(loadAccount, 1000);
    }
  }
}
function reloadAccountSoon() { clearTimeout(accountTimer); accountTimer = setTimeout(loadAccount, 300); }

const NO_ACCOUNT = "No account to show. Sign in with a client allowed one.";
// `d`, the account's dashboard, or nothing to show (and why: the HTTP status of a failed load).
function showAccount(d, status) {
  $("acct-body").hidden = !d; $("acct-empty").hidden = !!d;
  $("acct-empty").textContent = status === undefined || status === 401 || status === 403 ? NO_ACCOUNT
    : `The account could not be loaded (${typeof status === "number" ? "HTTP " + status : "network error"}); trying again.`;
  if (!d) { $("acct-name").textContent = ""; return; }
  const s = d.summary || {};
  $("acct-name").textContent = ($("acct-pick").hidden ? d.id : "") + (s.connected ? "" : " · stream disconnected");
  $("acct-equity").textContent = money(s.equity); $("acct-cash").textContent = money(s.cash);
  $("acct-bp").textContent = money(s.buying_power);
  const upl = Number(s.unrealized_pl);
  $("acct-upl").textContent = money(s.unrealized_pl); $("acct-upl").className = signClass(upl);
  const pos = $("positions").tBodies[0]; pos.replaceChildren();
  for (const p of d.positions || []) {
    const tr = document.createElement("tr"); tr.dataset.symbol = p.symbol;
    cell(tr, "sym", p.symbol); cell(tr, "", fmt(p.qty, 0)); cell(tr, "", fmt(p.avg_entry_price));
    cell(tr, "", money(p.market_value)); cell(tr, signClass(Number(p.unrealized_pl)), money(p.unrealized_pl));
    pos.appendChild(tr);
  }
  if (!pos.rows.length) { const tr = document.createElement("tr"); cell(tr, "dim", "none").colSpan = 5; pos.appendChild(tr); }
  const ord = $("orders").tBodies[0]; ord.replaceChildren();
  for (const o of d.orders || []) {
    const tr = document.createElement("tr");
    cell(tr, "sym", o.symbol); cell(tr, signClass(o.side === "buy" ? 1 : -1), o.side); cell(tr, "", fmt(o.qty, 0));
    cell(tr, "", o.type || o.order_type || ""); cell(tr, "", fmt(o.limit_price)); cell(tr, "dim", o.status || "");
    ord.appendChild(tr);
  }
  if (!ord.rows.length) { const tr = document.createElement("tr"); cell(tr, "dim", "none").colSpan = 6; ord.appendChild(tr); }
  renderFills();
}

function renderFills() {
  const body = $("fills").tBodies[0]; body.replaceChildren();
  for (const f of fills.filter((f) => f.account === account).slice(0, 20)) {
    const tr = document.createElement("tr");
    cell(tr, "dim", f.time); cell(tr, "sym", f.symbol); cell(tr, signClass(f.side === "buy" ? 1 : -1), f.side);
    cell(tr, "", fmt(f.qty, 0)); cell(tr, "", fmt(f.price));
    body.appendChild(tr);
  }
  if (!body.rows.length) { const tr = document.createElement("tr"); cell(tr, "dim", "none since this page opened").colSpan = 5; body.appendChild(tr); }
}

function onOrder(m) {
  if ((m.event === "fill" || m.event === "partial_fill") && m.order) {
    const t = m.event_timestamp || m.timestamp;
    fills.unshift({ account: m.account, time: t ? new Date(t).toLocaleTimeString() : "", symbol: m.order.symbol,
                    side: m.order.side, qty: m.qty, price: m.price });
    fills.length = Math.min(fills.length, 50);
  }
  reloadAccountSoon();
}

// ---- the connection -----------------------------------------------------------------------
function send(msg) { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg)); }
function subscribeAll() {
  if (symbols.size) send({ action: "subscribe", symbols: [...symbols], channels: PRICE_CHANNELS });
  send({ action: "subscribe", channels: ["news"], symbols: ["*"] });
  if (scopes.some((s) => s.startsWith("account:"))) send({ action: "subscribe", channels: ["positions"] });
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(scheme + "//" + location.host + "/ws");
  ws.onopen = () => { retry = 500; $("conn").textContent = "live"; $("conn").dataset.state = "open"; if (token) send({ action: "auth", token }); };
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    switch (m.type) {
      case "welcome":
        scopes = m.scopes || [];
        showProvider(m.provider);
        if (!token) { afterAuth(); }
        break;
      case "authenticated":
        scopes = m.scopes || scopes; $("who").textContent = m.client ? "signed in as " + m.client : "signed in";
        $("signin").hidden = true; afterAuth();
        break;
      case "spot_price_update": case "option_price_update": showPrice(m.update); break;
      case "spot_price_batch": case "option_price_batch": m.updates.forEach(showPrice); break;
      case "alpaca_status": showFeed(m.status, m.details); break;
      case "news": showNews(m.news); break;
      case "order_update": onOrder(m); break;
      case "position_update": reloadAccountSoon(); break;
      case "subscribed":
        (m.symbols || []).filter((s) => s !== "*" && !isOption(s)).forEach(rowOf);
        $("messages").textContent = (m.rejected || []).map((r) => r.symbol + ": " + r.message).join("; ");
        break;
      case "error":
        $("messages").textContent = m.message;
        if (m.code === "unauthorized" && token) {
          // The stored credential was refused: carry on with the anonymous scopes.
          token = ""; sessionStorage.removeItem("tickrelay.token"); $("signin").hidden = false; afterAuth();
        }
        break;
    }
  };
  ws.onclose = (ev) => {
    $("conn").textContent = `reconnecting… (closed ${ev.code})`; $("conn").dataset.state = "closed";
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 5000);
  };
}

function afterAuth() {
  // Anonymous callers without market data must sign in to see anything.
  if (!scopes.includes("market")) $("signin").hidden = false;
  subscribeAll();
  loadAccount();
}

function removeSymbol(s) {
  symbols.delete(s); saveSymbols();
  send({ action: "unsubscribe", symbols: [s], channels: PRICE_CHANNELS });
  const tr = document.querySelector(`#watchlist tr[data-symbol="${CSS.escape(s)}"]`);
  if (tr) tr.remove();
  quotes.delete(s);
  $("watch-count").textContent = $("watchlist").tBodies[0].rows.length + " symbols";
}

$("add-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const s = $("add-symbol").value.trim().toUpperCase();
  if (s) { symbols.add(s); saveSymbols(); send({ action: "subscribe", symbols: [s], channels: PRICE_CHANNELS }); if (!isOption(s)) rowOf(s); }
  $("add-symbol").value = "";
});
$("signin").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("token").value.trim();
  if (!token) return;
  sessionStorage.setItem("tickrelay.token", token);
  $("token").value = "";
  send({ action: "auth", token });
});
$("acct-pick").addEventListener("change", (ev) => { account = ev.target.value; loadAccount(); });
$("signin-toggle").addEventListener("click", () => { $("signin").hidden = !$("signin").hidden; });
function setTheme(t) { document.documentElement.dataset.theme = t; localStorage.setItem("tickrelay.theme", t); }
$("theme").addEventListener("click", () => setTheme(document.documentElement.dataset.theme === "light" ? "dark" : "light"));
setTheme(localStorage.getItem("tickrelay.theme") || (matchMedia("(prefers-color-scheme: light)").matches ? "light" : "dark"));
showProvider(config.provider);

// Ages, retry countdowns and the account refresh.
setInterval(() => {
  const now = Date.now();
  for (const tr of $("watchlist").tBodies[0].rows) {
    const q = quotes.get(tr.dataset.symbol);
    tr.cells[7].textContent = q && q.ts ? Math.max(0, (now - q.ts) / 1000).toFixed(1) + " s" : "–";
    const gap = !!(q && q.gapAt && now - q.gapAt < GAP_MARK_MS);
    if (tr.classList.contains("gap") !== gap) {
      tr.classList.toggle("gap", gap);
      tr.cells[0].title = gap ? "the upstream connection was lost: updates may be missing before " +
        new Date(q.gapAt).toLocaleTimeString() : "";
    }
  }
  renderStatus();
}, 250);
setInterval(loadAccount, 10000);

// The Redis sink and lease, as readiness reports them.
async function showScaleout() {
  try {
    const r = await (await fetch("/readyz", { cache: "no-store" })).json();
    const parts = [];
    if (r.redis) parts.push("redis sink " + r.redis);
    if (r.lease) parts.push("lease " + r.lease);
    $("scaleout").textContent = parts.join(" · ");
  } catch (e) { /* restarting: the connection state shows it */ }
}
showScaleout();
setInterval(showScaleout, 5000);

for (const s of symbols) if (!isOption(s)) rowOf(s);
renderFills();
connect();
