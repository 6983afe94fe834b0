//! `Broker`: the simulator's fake trading account, its REST endpoints and its trading stream.
//!
//! Owns: one account (cash, equity), its positions and open orders, and the trading-stream
//! connections listening to `trade_updates`. It places a small market order every
//! `order_interval_ms` (and on `POST /control/order`), announces it (`new`), fills it (`fill`),
//! updates the position and cash, and sends both events to every listener — the cycle tickrelay
//! follows to keep its copy of the account current.
//!
//! The trading stream (`/stream`, `/stream/`) speaks Alpaca's protocol: no greeting; `authenticate`
//! answered by an `authorization` frame, `listen` by `listening`; events as JSON in binary frames.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web_actors::ws::{self, CloseCode, ProtocolError, WebsocketContext};
use bytes::Bytes;
use log::{debug, info};
use serde::Deserialize;
use serde_json::{json, Value};

use super::faults::{Faults, SimFeed};
use crate::rng::SplitMix64;
use crate::time::Timestamp;

/// Starting cash of the simulated account.
const STARTING_CASH: f64 = 100_000.0;

/// An event for trading-stream listeners (JSON, sent in a binary frame).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub enum TradingOutbound {
    Event(Bytes),
    /// Drop the connection without a close frame.
    Abort,
}

/// A trading-stream connection started listening (or stopped).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Listen {
    pub id: u64,
    pub sink: Option<Recipient<TradingOutbound>>,
}

/// Place a market order and fill it at `price` (the control API, and the periodic generator).
#[derive(Message, Deserialize, Clone)]
#[rtype(result = "Value")]
pub struct PlaceOrder {
    pub symbol: String,
    pub qty: i64,
    pub side: String,
    pub price: f64,
}

/// Which REST view to read.
#[derive(Clone, Copy, Debug)]
pub enum View {
    Account,
    Positions,
    Orders,
}

/// Read the account, its positions or its open orders, as Alpaca's REST API returns them.
#[derive(Message)]
#[rtype(result = "Value")]
pub struct Read(pub View);

/// Send a command to every trading-stream connection; answers how many there were.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct BroadcastTrading(pub TradingOutbound);

#[derive(Clone, Debug)]
struct Position {
    qty: i64,
    avg_entry_price: f64,
    current_price: f64,
}

/// The simulated account.
pub struct Broker {
    faults: Arc<Faults>,
    symbols: Vec<String>,
    order_interval: Duration,
    rng: SplitMix64,
    cash: f64,
    positions: BTreeMap<String, Position>,
    open_orders: BTreeMap<String, Value>,
    listeners: HashMap<u64, Recipient<TradingOutbound>>,
    created_at: Timestamp,
}

/// A version-4-shaped UUID from 128 bits (SDKs validate order and asset ids as UUIDs).
fn uuid_v4(a: u64, b: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0xfff,
        b & 0xffff_ffff_ffff
    )
}

fn money(v: f64) -> String {
    format!("{v:.2}")
}

impl Broker {
    pub fn new(
        faults: Arc<Faults>,
        symbols: Vec<String>,
        order_interval: Duration,
        seed: u64,
    ) -> Self {
        Broker {
            faults,
            symbols,
            order_interval,
            rng: SplitMix64::new(seed ^ 0x0b0b),
            cash: STARTING_CASH,
            positions: BTreeMap::new(),
            open_orders: BTreeMap::new(),
            listeners: HashMap::new(),
            created_at: Timestamp::now(),
        }
    }

    fn uuid(&mut self) -> String {
        let a = self.rng.next_u64();
        let b = self.rng.next_u64();
        uuid_v4(a, b)
    }

    /// A stable UUID for a symbol's asset (Alpaca's asset ids are UUIDs; SDKs validate them).
    fn asset_id(symbol: &str) -> String {
        let a = crate::rng::fnv1a(symbol.as_bytes());
        let b = crate::rng::fnv1a(format!("asset:{symbol}").as_bytes());
        uuid_v4(a, b)
    }

    fn asset_class(symbol: &str) -> &'static str {
        if symbol.contains('/') {
            "crypto"
        } else {
            "us_equity"
        }
    }

    fn position_json(symbol: &str, p: &Position) -> Value {
        let market_value = p.qty as f64 * p.current_price;
        let cost_basis = p.qty as f64 * p.avg_entry_price;
        let pl = market_value - cost_basis;
        json!({
            "asset_id": Self::asset_id(symbol),
            "symbol": symbol,
            "exchange": "SIM",
            "asset_class": Self::asset_class(symbol),
            "asset_marginable": true,
            "qty": p.qty.abs().to_string(),
            "qty_available": p.qty.abs().to_string(),
            "avg_entry_price": money(p.avg_entry_price),
            "side": if p.qty >= 0 { "long" } else { "short" },
            "market_value": money(market_value),
            "cost_basis": money(cost_basis),
            "unrealized_pl": money(pl),
            "unrealized_plpc": format!("{:.4}", if cost_basis == 0.0 { 0.0 } else { pl / cost_basis.abs() }),
            "unrealized_intraday_pl": money(pl),
            "unrealized_intraday_plpc": "0",
            "current_price": money(p.current_price),
            "lastday_price": money(p.avg_entry_price),
            "change_today": "0",
        })
    }

    fn account_json(&self) -> Value {
        let long: f64 = self
            .positions
            .values()
            .map(|p| p.qty as f64 * p.current_price)
            .sum();
        let equity = self.cash + long;
        json!({
            "id": "8d0bbd6e-0000-4000-a000-000000000001",
            "account_number": "PA3SIMULATED",
            "status": "ACTIVE",
            "crypto_status": "ACTIVE",
            "currency": "USD",
            "cash": money(self.cash),
            "buying_power": money(self.cash * 2.0),
            "regt_buying_power": money(self.cash * 2.0),
            "non_marginable_buying_power": money(self.cash),
            "equity": money(equity),
            "last_equity": money(STARTING_CASH),
            "portfolio_value": money(equity),
            "long_market_value": money(long),
            "short_market_value": "0.00",
            "initial_margin": money(long / 2.0),
            "maintenance_margin": money(long / 4.0),
            "multiplier": "2",
            "daytrade_count": 0,
            "pattern_day_trader": false,
            "trading_blocked": false,
            "transfers_blocked": false,
            "account_blocked": false,
            "shorting_enabled": true,
            "created_at": self.created_at,
        })
    }

    fn order_json(&mut self, symbol: &str, qty: i64, side: &str, now: Timestamp) -> Value {
        let id = self.uuid();
        let client_id = self.uuid();
        json!({
            "id": id,
            "client_order_id": client_id,
            "created_at": now,
            "updated_at": now,
            "submitted_at": now,
            "filled_at": null,
            "expired_at": null,
            "canceled_at": null,
            "failed_at": null,
            "replaced_at": null,
            "replaced_by": null,
            "replaces": null,
            "asset_id": Self::asset_id(symbol),
            "symbol": symbol,
            "asset_class": Self::asset_class(symbol),
            "notional": null,
            "qty": qty.to_string(),
            "filled_qty": "0",
            "filled_avg_price": null,
            "order_class": "",
            "order_type": "market",
            "type": "market",
            "side": side,
            "time_in_force": "day",
            "limit_price": null,
            "stop_price": null,
            "status": "new",
            "extended_hours": false,
            "legs": null,
            "trail_percent": null,
            "trail_price": null,
            "hwm": null,
        })
    }

    fn publish(&self, event: &Value) {
        if self.faults.feed(SimFeed::Trading).data_blocked() {
            return;
        }
        let bytes = Bytes::from(event.to_string());
        for sink in self.listeners.values() {
            sink.do_send(TradingOutbound::Event(bytes.clone()));
        }
    }

    fn place(&mut self, order: PlaceOrder) -> Value {
        let now = Timestamp::now();
        let qty = order.qty.abs().max(1);
        let side = if order.side == "sell" { "sell" } else { "buy" };
        let mut o = self.order_json(&order.symbol, qty, side, now);
        let id = o["id"].as_str().unwrap_or_default().to_owned();
        self.open_orders.insert(id.clone(), o.clone());
        self.publish(
            &json!({"stream":"trade_updates","data":{"event":"new","order":o,"timestamp":now}}),
        );

        // Fill at once at the requested price.
        let signed = if side == "buy" { qty } else { -qty };
        let position = self
            .positions
            .entry(order.symbol.clone())
            .or_insert(Position {
                qty: 0,
                avg_entry_price: order.price,
                current_price: order.price,
            });
        let new_qty = position.qty + signed;
        if position.qty == 0 || (position.qty > 0) == (signed > 0) {
            let total = position.qty.abs() + qty;
            position.avg_entry_price = (position.avg_entry_price * position.qty.abs() as f64
                + order.price * qty as f64)
                / total as f64;
        }
        position.qty = new_qty;
        position.current_price = order.price;
        if new_qty == 0 {
            self.positions.remove(&order.symbol);
        }
        self.cash -= signed as f64 * order.price;
        self.open_orders.remove(&id);
        let fill_time = Timestamp::now();
        o["status"] = "filled".into();
        o["filled_qty"] = qty.to_string().into();
        o["filled_avg_price"] = money(order.price).into();
        o["filled_at"] = json!(fill_time);
        o["updated_at"] = json!(fill_time);
        let execution = self.uuid();
        self.publish(&json!({
            "stream": "trade_updates",
            "data": {
                "event": "fill",
                "execution_id": execution,
                "order": o,
                "position_qty": new_qty.to_string(),
                "price": money(order.price),
                "qty": qty.to_string(),
                "timestamp": fill_time,
            }
        }));
        info!(
            "simulator: account filled {side} {qty} {} at {}",
            order.symbol,
            money(order.price)
        );
        o
    }

    fn random_order(&mut self) {
        if self.symbols.is_empty() || self.listeners.is_empty() {
            return;
        }
        let symbol = self.symbols[self.rng.below(self.symbols.len() as u64) as usize].clone();
        let held = self.positions.get(&symbol).map_or(0, |p| p.qty);
        let side = if held > 0 && self.rng.below(2) == 0 {
            "sell"
        } else {
            "buy"
        };
        let qty = if side == "sell" {
            held.min(1 + self.rng.below(10) as i64)
        } else {
            1 + self.rng.below(10) as i64
        };
        let price = self
            .positions
            .get(&symbol)
            .map_or(100.0, |p| p.current_price)
            * (1.0 + (self.rng.next_f64() - 0.5) / 100.0);
        self.place(PlaceOrder {
            symbol,
            qty,
            side: side.into(),
            price: (price * 100.0).round() / 100.0,
        });
    }
}

impl Actor for Broker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if !self.order_interval.is_zero() {
            ctx.run_interval(self.order_interval, |act, _| act.random_order());
        }
    }
}

impl Handler<Listen> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Listen, _: &mut Context<Self>) {
        match msg.sink {
            Some(sink) => {
                self.listeners.insert(msg.id, sink);
            }
            None => {
                self.listeners.remove(&msg.id);
            }
        }
    }
}

impl Handler<PlaceOrder> for Broker {
    type Result = MessageResult<PlaceOrder>;

    fn handle(&mut self, msg: PlaceOrder, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.place(msg))
    }
}

impl Handler<Read> for Broker {
    type Result = MessageResult<Read>;

    fn handle(&mut self, msg: Read, _: &mut Context<Self>) -> Self::Result {
        MessageResult(match msg.0 {
            View::Account => self.account_json(),
            View::Positions => Value::Array(
                self.positions
                    .iter()
                    .map(|(s, p)| Self::position_json(s, p))
                    .collect(),
            ),
            View::Orders => Value::Array(self.open_orders.values().cloned().collect()),
        })
    }
}

impl Handler<BroadcastTrading> for Broker {
    type Result = usize;

    fn handle(&mut self, msg: BroadcastTrading, _: &mut Context<Self>) -> usize {
        for sink in self.listeners.values() {
            sink.do_send(msg.0.clone());
        }
        self.listeners.len()
    }
}

/// One trading-stream client.
pub struct TradingConnection {
    id: u64,
    broker: Addr<Broker>,
    faults: Arc<Faults>,
    authorized: bool,
}

impl TradingConnection {
    pub fn new(id: u64, broker: Addr<Broker>, faults: Arc<Faults>) -> Self {
        TradingConnection {
            id,
            broker,
            faults,
            authorized: false,
        }
    }

    fn send(&self, ctx: &mut WebsocketContext<Self>, value: Value) {
        if !self.faults.feed(SimFeed::Trading).frozen() {
            // Alpaca sends the trading stream's JSON in binary frames.
            ctx.binary(Bytes::from(value.to_string()));
        }
    }

    fn on_message(&mut self, data: &[u8], ctx: &mut WebsocketContext<Self>) {
        let Ok(msg) = serde_json::from_slice::<Value>(data) else {
            self.send(
                ctx,
                json!({"stream":"error","data":{"error_message":"invalid JSON"}}),
            );
            return;
        };
        match msg["action"].as_str() {
            Some("authenticate") => {
                let d = &msg["data"];
                let present = |k: &str| d[k].as_str().is_some_and(|v| !v.is_empty());
                let refused = !(present("key_id") && present("secret_key"))
                    || self
                        .faults
                        .feed(SimFeed::Trading)
                        .take_auth_failure()
                        .is_some();
                if refused {
                    self.send(
                        ctx,
                        json!({"stream":"authorization","data":{"action":"authenticate","message":"access key verification failed","status":"unauthorized"}}),
                    );
                    ctx.close(Some(CloseCode::Policy.into()));
                    ctx.stop();
                } else {
                    self.authorized = true;
                    self.send(ctx, json!({"stream":"authorization","data":{"status":"authorized","action":"authenticate"}}));
                }
            }
            Some("listen") => {
                if !self.authorized {
                    self.send(ctx, json!({"stream":"authorization","data":{"status":"unauthorized","action":"listen"}}));
                    return;
                }
                let streams: Vec<String> = msg["data"]["streams"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                let listening = streams.iter().any(|s| s == "trade_updates");
                self.broker.do_send(Listen {
                    id: self.id,
                    sink: listening.then(|| ctx.address().recipient()),
                });
                self.send(
                    ctx,
                    json!({"stream":"listening","data":{"streams":streams}}),
                );
            }
            _ => self.send(
                ctx,
                json!({"stream":"error","data":{"error_message":"unknown action"}}),
            ),
        }
    }
}

impl Actor for TradingConnection {
    type Context = WebsocketContext<Self>;
}

impl Drop for TradingConnection {
    fn drop(&mut self) {
        self.broker.do_send(Listen {
            id: self.id,
            sink: None,
        });
    }
}

impl Handler<TradingOutbound> for TradingConnection {
    type Result = ();

    fn handle(&mut self, msg: TradingOutbound, ctx: &mut Self::Context) {
        match msg {
            TradingOutbound::Event(bytes) => {
                if !self.faults.feed(SimFeed::Trading).data_blocked() {
                    ctx.binary(bytes);
                }
            }
            TradingOutbound::Abort => ctx.stop(),
        }
    }
}

impl StreamHandler<Result<ws::Message, ProtocolError>> for TradingConnection {
    fn handle(&mut self, item: Result<ws::Message, ProtocolError>, ctx: &mut Self::Context) {
        match item {
            Ok(ws::Message::Text(text)) => self.on_message(text.as_bytes(), ctx),
            Ok(ws::Message::Binary(data)) => self.on_message(&data, ctx),
            Ok(ws::Message::Ping(p)) => {
                if !self.faults.feed(SimFeed::Trading).frozen() {
                    ctx.pong(&p);
                }
            }
            Ok(ws::Message::Close(_)) => {
                debug!(
                    "simulator: trading connection {} closed by the client",
                    self.id
                );
                ctx.stop();
            }
            Ok(_) => {}
            Err(_) => ctx.stop(),
        }
    }
}
