//! The browser test phone and the live call feed.
//!
//! - `GET /phone`: the page (`phone.html`, embedded in the binary). It calls the two routes
//!   below and `POST /api/calls/{id}/hangup` with the admin token it took from its URL fragment
//!   (`/phone#token=…`, never sent to a server) or from its token field.
//! - `POST /api/phone/calls` `{"user": "<WhatsApp id>", "sdp": "<browser offer>"}` → 201
//!   `{"call_id", "sdp": "<answer>", "state"}`: non-trickle both ways (the page waits for ICE
//!   gathering; our answer carries every candidate). The call is a call like a WhatsApp one
//!   (channel `test_phone`) on the same engine, agent, tools and store.
//! - `GET /api/calls/{id}/events`: Server-Sent Events for any call (WhatsApp ones too): the
//!   call's state and its log so far, then what happens live while this instance holds it,
//!   then `end`. Every event but `end` carries a JSON object; log entries carry their log id as
//!   the SSE `id`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use call_core::CallState;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use super::admin::{bad_json, call_with_log, phone_number, Admin};
use super::error::ApiError;
use super::AppState;
use crate::calls::{FeedItem, FeedKind, PhoneCallError};
use crate::store::{CallEventRecord, Store};

/// The page.
const PAGE: &str = include_str!("phone.html");

/// The user a test-phone call acts for when the request names none (the page's "call as" field
/// starts with the same number): a 555 number of the kind kept for fiction, so that the test
/// user is not a real person.
pub const DEFAULT_TEST_USER: &str = "15550001234";

/// `GET /phone`.
pub async fn page(State(state): State<AppState>) -> Response {
    let (status, body) = if state.admin_token.is_some() {
        (StatusCode::OK, PAGE.to_owned())
    } else {
        (StatusCode::NOT_FOUND, off_page())
    };
    let mut response = (status, Html(body)).into_response();
    let headers = response.headers_mut();
    // Inline script and style only; requests to this service only; never framed; the URL
    // (which may hold the token in its fragment) is never sent on.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; media-src 'self' blob: mediastream:; img-src 'self' data:; \
             frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn off_page() -> String {
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
     <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
     <title>whatsapp-bridge test phone (off)</title></head>\
     <body style=\"font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; padding: 0 1rem\">\
     <h1>The test phone is off</h1>\
     <p>It uses the admin API, which is off because <code>ADMIN_TOKEN</code> is not set.</p>\
     <p>To turn it on, start the service with an admin token, e.g. \
     <code>ADMIN_TOKEN=$(openssl rand -hex 16) cargo run --release</code>, then open \
     <code>/phone</code> and enter the token. On a machine with nothing configured, \
     <code>cargo run --release</code> starts in local development mode and prints the URL \
     to open, token included.</p></body></html>"
        .to_owned()
}

#[derive(Deserialize)]
pub struct PhoneCallRequest {
    /// The WhatsApp id (digits) the call acts for.
    user: Option<String>,
    /// The browser's SDP offer.
    sdp: String,
}

/// `POST /api/phone/calls`.
pub async fn take_call(
    _: Admin,
    State(state): State<AppState>,
    body: Result<Json<PhoneCallRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|r| bad_json(&r))?;
    let user = phone_number(
        "user",
        body.user
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .unwrap_or(DEFAULT_TEST_USER),
    )?;
    if !body.sdp.trim_start().starts_with("v=0") {
        return Err(ApiError::BadRequest {
            code: "bad_sdp",
            message: "`sdp` must be the browser's SDP offer (text starting with v=0)".to_owned(),
        });
    }
    let calls = state.calls.as_ref().ok_or_else(|| ApiError::Unavailable {
        code: "calls_disabled",
        message: "calls are not available on this instance".to_owned(),
        retry_after: None,
    })?;
    let call = calls
        .take_phone_call(&user, &body.sdp)
        .await
        .map_err(phone_call_error)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"call_id": call.call_id, "sdp": call.answer, "state": CallState::Answered.as_str()})),
    )
        .into_response())
}

fn phone_call_error(err: PhoneCallError) -> ApiError {
    match err {
        PhoneCallError::AtCapacity(_) => ApiError::Unavailable {
            code: "at_capacity",
            message: err.to_string(),
            retry_after: Some(Duration::from_secs(30)),
        },
        PhoneCallError::BadOffer(_) => ApiError::BadRequest {
            code: "bad_sdp",
            message: err.to_string(),
        },
        PhoneCallError::AssistantUnavailable(_) => ApiError::Unavailable {
            code: "assistant_unavailable",
            message: err.to_string(),
            retry_after: Some(Duration::from_secs(30)),
        },
        PhoneCallError::Media(_) => ApiError::Unavailable {
            code: "media_unavailable",
            message: err.to_string(),
            retry_after: Some(Duration::from_secs(5)),
        },
        PhoneCallError::Store(err) => ApiError::Internal(anyhow::Error::new(err)),
    }
}

/// `GET /api/calls/{call_id}/events`.
pub async fn call_events(
    _: Admin,
    State(state): State<AppState>,
    Path(call_id): Path<String>,
) -> Result<Response, ApiError> {
    // Subscribed before the history is read, so nothing that happens in between is lost (log
    // entries already in the history are skipped by id).
    let live = state.calls.as_ref().map(|c| c.feed().subscribe());
    let (call, history) = call_with_log(&state, &call_id).await?;
    let held = state.calls.as_ref().is_some_and(|c| c.holds(&call_id));
    let (tx, rx) = mpsc::channel(64);
    let watch = Watch {
        call_id,
        store: state.store.clone(),
        tx,
        last_log: 0,
    };
    tokio::spawn(watch.run(
        (call.state, call.end_reason, call.updated_at),
        history,
        live,
        held,
        state.shutdown.clone(),
    ));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), rx))
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    // Proxies (nginx) buffer responses unless told not to; a feed that arrives in one piece at
    // the end is no feed.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// One watcher of one call: turns the call's history and feed into SSE events.
struct Watch {
    call_id: String,
    store: Arc<dyn Store>,
    tx: mpsc::Sender<Event>,
    /// The last log entry sent.
    last_log: i64,
}

impl Watch {
    async fn run(
        mut self,
        (state, end_reason, at): (CallState, Option<String>, DateTime<Utc>),
        history: Vec<CallEventRecord>,
        live: Option<broadcast::Receiver<Arc<FeedItem>>>,
        held: bool,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        if !self.state(state, end_reason.as_deref(), at).await {
            return;
        }
        for entry in history {
            if !self.log(entry.id, &entry.kind, entry.at, entry.data).await {
                return;
            }
        }
        if let Some(mut live) = live {
            if held {
                self.follow(&mut live, &shutdown).await;
            } else {
                // The call ended before we looked (or is another instance's): what it published
                // after we subscribed is buffered; take that and stop.
                while let Ok(item) = live.try_recv() {
                    if !self.item(&item).await {
                        break;
                    }
                }
            }
        }
        let _ = self.tx.send(Event::default().event("end").data("{}")).await;
    }

    /// Sends the call's live items until it closes, the client goes or the service stops.
    async fn follow(
        &mut self,
        live: &mut broadcast::Receiver<Arc<FeedItem>>,
        shutdown: &tokio_util::sync::CancellationToken,
    ) {
        loop {
            let received = tokio::select! {
                () = self.tx.closed() => return,
                // Open streams would hold up the server's graceful shutdown.
                () = shutdown.cancelled() => return,
                received = live.recv() => received,
            };
            match received {
                Ok(item) => {
                    if item.call_id != self.call_id {
                        continue;
                    }
                    if matches!(item.kind, FeedKind::Closed) || !self.item(&item).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(call_id = %self.call_id, missed, "call feed watcher fell behind; reading the log again");
                    if !self.catch_up().await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Sends one feed item; false when the client is gone.
    async fn item(&mut self, item: &FeedItem) -> bool {
        if item.call_id != self.call_id {
            return true;
        }
        match &item.kind {
            FeedKind::State {
                state,
                end_reason,
                at,
            } => self.state(*state, end_reason.as_deref(), *at).await,
            FeedKind::Log { id, kind, at, data } => self.log(*id, kind, *at, data.clone()).await,
            FeedKind::Closed => true,
        }
    }

    /// After falling behind: the log entries missed, and the state now.
    async fn catch_up(&mut self) -> bool {
        match self.store.call_events(&self.call_id).await {
            Ok(entries) => {
                for entry in entries {
                    if !self.log(entry.id, &entry.kind, entry.at, entry.data).await {
                        return false;
                    }
                }
            }
            Err(err) => {
                tracing::warn!(call_id = %self.call_id, error = %err, "could not read the call's log again")
            }
        }
        if let Ok(Some(call)) = self.store.call(&self.call_id).await {
            return self
                .state(call.state, call.end_reason.as_deref(), call.updated_at)
                .await;
        }
        true
    }

    async fn state(
        &mut self,
        state: CallState,
        end_reason: Option<&str>,
        at: DateTime<Utc>,
    ) -> bool {
        let data = json!({"state": state.as_str(), "end_reason": end_reason, "at": at});
        self.send(Event::default().event("state").data(data.to_string()))
            .await
    }

    /// Sends a log entry unless it was sent already.
    async fn log(
        &mut self,
        id: i64,
        kind: &str,
        at: DateTime<Utc>,
        mut data: serde_json::Value,
    ) -> bool {
        if id <= self.last_log {
            return true;
        }
        self.last_log = id;
        if let serde_json::Value::Object(fields) = &mut data {
            fields
                .entry("at")
                .or_insert_with(|| serde_json::Value::String(at.to_rfc3339()));
        } else {
            data = json!({"value": data, "at": at});
        }
        self.send(
            Event::default()
                .event(kind)
                .id(id.to_string())
                .data(data.to_string()),
        )
        .await
    }

    async fn send(&self, event: Event) -> bool {
        self.tx.send(event).await.is_ok()
    }
}
