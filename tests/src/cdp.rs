//! A small Chrome DevTools Protocol client over one WebSocket.
//!
//! One connection to the browser endpoint (`ws://127.0.0.1:PORT/devtools/browser/ID`)
//! carries every tab: tabs are attached with `flatten: true`, so each command to
//! a tab is the same JSON message with a `sessionId`. A reader task routes
//! responses to their callers by `id` and keeps each session's console output
//! and uncaught exceptions, so a failing test can show what the page said.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// Lines of console output kept per session.
const CONSOLE_KEEP: usize = 400;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// What a page printed, by session id.
type Consoles = Arc<Mutex<HashMap<String, Vec<String>>>>;

/// A DevTools connection. Cheap to clone.
#[derive(Clone)]
pub struct Cdp {
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    consoles: Consoles,
    next_id: Arc<AtomicU64>,
    closed: Arc<Mutex<Option<String>>>,
}

impl Cdp {
    /// Connect over an already-connected TCP stream (it may live in another
    /// network namespace) to the browser's WebSocket `url`.
    pub async fn connect(stream: tokio::net::TcpStream, url: &str) -> anyhow::Result<Cdp> {
        let (ws, _resp) = tokio_tungstenite::client_async(url, stream)
            .await
            .with_context(|| format!("DevTools WebSocket handshake with {url}"))?;
        let (mut sink, mut source) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let pending: Pending = Arc::default();
        let consoles: Consoles = Arc::default();
        let closed: Arc<Mutex<Option<String>>> = Arc::default();

        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
        });

        let (p, c, cl) = (pending.clone(), consoles.clone(), closed.clone());
        tokio::spawn(async move {
            let why = loop {
                match source.next().await {
                    Some(Ok(Message::Text(t))) => route(t.as_str(), &p, &c),
                    Some(Ok(Message::Close(f))) => break format!("closed by the browser ({f:?})"),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break format!("read error: {e}"),
                    None => break "connection ended".to_owned(),
                }
            };
            *cl.lock() = Some(why.clone());
            for (_, tx) in p.lock().drain() {
                let _ = tx.send(Err(format!("DevTools connection lost: {why}")));
            }
        });

        Ok(Cdp { out, pending, consoles, next_id: Arc::new(AtomicU64::new(1)), closed })
    }

    /// Send `method` with `params` (to a tab when `session` is given) and wait
    /// for its result, at most `timeout`.
    pub async fn call_timeout(
        &self,
        method: &str,
        params: Value,
        session: Option<&str>,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        if let Some(why) = self.closed.lock().clone() {
            bail!("{method}: DevTools connection lost: {why}");
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = Value::String(s.to_owned());
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, tx);
        if self.out.send(Message::text(msg.to_string())).is_err() {
            self.pending.lock().remove(&id);
            bail!("{method}: DevTools connection is closed");
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(anyhow!("{method}: {e}")),
            Ok(Err(_)) => Err(anyhow!("{method}: DevTools connection dropped the call")),
            Err(_) => {
                self.pending.lock().remove(&id);
                Err(anyhow!("{method}: no answer within {timeout:?}"))
            }
        }
    }

    /// [`call_timeout`](Self::call_timeout) with 30 s.
    pub async fn call(&self, method: &str, params: Value, session: Option<&str>) -> anyhow::Result<Value> {
        self.call_timeout(method, params, session, Duration::from_secs(30)).await
    }

    /// What the page behind `session` logged so far (console calls, exceptions).
    pub fn console(&self, session: &str) -> Vec<String> {
        self.consoles.lock().get(session).cloned().unwrap_or_default()
    }
}

fn route(text: &str, pending: &Pending, consoles: &Consoles) {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return;
    };
    if let Some(id) = v.get("id").and_then(Value::as_u64) {
        if let Some(tx) = pending.lock().remove(&id) {
            let r = match v.get("error") {
                Some(e) => Err(e.to_string()),
                None => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
            };
            let _ = tx.send(r);
        }
        return;
    }
    let (Some(method), Some(session)) =
        (v.get("method").and_then(Value::as_str), v.get("sessionId").and_then(Value::as_str))
    else {
        return;
    };
    let line = match method {
        "Runtime.consoleAPICalled" => {
            let p = &v["params"];
            let kind = p["type"].as_str().unwrap_or("log");
            let args: Vec<String> =
                p["args"].as_array().map(|a| a.iter().map(remote_object_text).collect()).unwrap_or_default();
            format!("[{kind}] {}", args.join(" "))
        }
        "Runtime.exceptionThrown" => {
            let d = &v["params"]["exceptionDetails"];
            let desc = d["exception"]["description"].as_str().or(d["text"].as_str()).unwrap_or("?");
            format!("[uncaught] {desc}")
        }
        "Log.entryAdded" => {
            let e = &v["params"]["entry"];
            format!("[{}] {} {}", e["level"].as_str().unwrap_or("log"), e["text"], e["url"])
        }
        _ => return,
    };
    let mut all = consoles.lock();
    let log = all.entry(session.to_owned()).or_default();
    if log.len() >= CONSOLE_KEEP {
        log.remove(0);
    }
    log.push(line);
}

fn remote_object_text(o: &Value) -> String {
    if let Some(v) = o.get("value") {
        return match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
    }
    o.get("description")
        .and_then(Value::as_str)
        .or_else(|| o.get("type").and_then(Value::as_str))
        .unwrap_or("?")
        .to_owned()
}
