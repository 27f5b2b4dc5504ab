//! A fake Graph API: a real HTTP server on 127.0.0.1, port 0, that records what the bridge asks of
//! `/{version}/{phone-number-id}/calls` and `/messages` and answers as scripted (Meta's shapes
//! by default). A message is recorded with the action `message`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// How the fake answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Meta's success shape for the action.
    Ok,
    /// A Graph error.
    Error {
        status: u16,
        code: i64,
        details: &'static str,
    },
    /// A bare status without a Graph body.
    Status(u16),
    /// Answer `Ok` after a pause.
    Slow(Duration),
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub action: String,
    pub body: Value,
    pub authorization: Option<String>,
}

#[derive(Default)]
struct Shared {
    requests: Vec<Recorded>,
    scripts: HashMap<String, VecDeque<Reply>>,
    next_call: u64,
    watchers: Vec<tokio::sync::mpsc::UnboundedSender<Recorded>>,
}

/// The fake, running.
#[derive(Clone)]
pub struct FakeGraph {
    pub url: String,
    shared: Arc<Mutex<Shared>>,
}

impl FakeGraph {
    pub async fn start() -> Self {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let app = Router::new()
            .route("/{version}/{phone}/calls", post(calls))
            .route("/{version}/{phone}/messages", post(messages))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, shared }
    }

    /// The next requests for `action` get these replies, then `Ok` again.
    pub fn script(&self, action: &str, replies: impl IntoIterator<Item = Reply>) {
        self.shared
            .lock()
            .expect("lock")
            .scripts
            .entry(action.to_owned())
            .or_default()
            .extend(replies);
    }

    /// Every request from now on, as it arrives (before it is answered).
    pub fn watch(&self) -> tokio::sync::mpsc::UnboundedReceiver<Recorded> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.shared.lock().expect("lock").watchers.push(tx);
        rx
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().expect("lock").requests.clone()
    }

    pub fn actions(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.action).collect()
    }
}

async fn messages(
    state: State<Arc<Mutex<Shared>>>,
    path: Path<(String, String)>,
    headers: HeaderMap,
    Json(mut body): Json<Value>,
) -> Response {
    body["action"] = json!("message");
    calls(state, path, headers, Json(body)).await
}

async fn calls(
    State(shared): State<Arc<Mutex<Shared>>>,
    Path((version, phone)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let action = body["action"].as_str().unwrap_or("").to_owned();
    let endpoint = if action == "message" {
        "messages"
    } else {
        "calls"
    };
    let (reply, call_id) = {
        let mut shared = shared.lock().expect("lock");
        let recorded = Recorded {
            path: format!("/{version}/{phone}/{endpoint}"),
            action: action.clone(),
            body: body.clone(),
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        };
        shared
            .watchers
            .retain(|watcher| watcher.send(recorded.clone()).is_ok());
        shared.requests.push(recorded);
        let reply = shared
            .scripts
            .get_mut(&action)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Reply::Ok);
        shared.next_call += 1;
        (reply, format!("wacid.FAKE{}", shared.next_call))
    };
    let ok = || {
        if action == "connect" {
            Json(json!({"messaging_product": "whatsapp", "calls": [{"id": call_id}]}))
                .into_response()
        } else if action == "message" {
            Json(json!({"messaging_product": "whatsapp",
                "contacts": [{"input": body["to"], "wa_id": body["to"]}],
                "messages": [{"id": format!("wamid.{call_id}")}]}))
            .into_response()
        } else {
            Json(json!({"messaging_product": "whatsapp", "success": true})).into_response()
        }
    };
    match reply {
        Reply::Ok => ok(),
        Reply::Slow(pause) => {
            tokio::time::sleep(pause).await;
            ok()
        }
        Reply::Status(status) => StatusCode::from_u16(status)
            .expect("status")
            .into_response(),
        Reply::Error {
            status,
            code,
            details,
        } => (
            StatusCode::from_u16(status).expect("status"),
            Json(json!({"error": {
                "message": "(#138006) Error",
                "type": "OAuthException",
                "code": code,
                "error_data": {"messaging_product": "whatsapp", "details": details},
                "fbtrace_id": "AzFakeTrace"
            }})),
        )
            .into_response(),
    }
}
