//! `GET /health` (liveness, with each dependency's state) and `GET /ready` (readiness).
//!
//! `/health` answers 200 while the process can answer at all, with `status: "degraded"` when
//! a dependency is down; `/ready` answers 503 when this instance should not get traffic (the
//! database is unreachable, its schema is behind, or it is shutting down), so a load balancer
//! takes it out of rotation.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

use super::AppState;

/// How long a health probe waits for the database.
const DB_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Serialize)]
struct DatabaseCheck {
    status: &'static str,
    backend: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

async fn probe_database(state: &AppState) -> DatabaseCheck {
    let backend = match state.store.backend() {
        crate::config::DatabaseBackend::Sqlite => "sqlite",
        crate::config::DatabaseBackend::Postgres => "postgres",
    };
    let started = Instant::now();
    let result = tokio::time::timeout(DB_PROBE_TIMEOUT, state.store.ping()).await;
    let (status, error) = match result {
        Ok(Ok(())) => ("up", None),
        Ok(Err(err)) => ("down", Some(err.to_string())),
        Err(_) => (
            "down",
            Some(format!("no answer within {DB_PROBE_TIMEOUT:?}")),
        ),
    };
    state.metrics.db_up.set(i64::from(status == "up"));
    DatabaseCheck {
        status,
        backend,
        latency_ms: (status == "up").then(|| started.elapsed().as_secs_f64() * 1000.0),
        error,
    }
}

/// Liveness and dependency states.
pub async fn health(State(state): State<AppState>) -> Json<Value> {
    let database = probe_database(&state).await;
    let depth = state.metrics.event_queue_depth.get();
    let capacity = state.metrics.event_queue_capacity.get();
    // A queue more than 90 % full means the router is falling behind.
    let queue_status = if capacity > 0 && depth * 10 > capacity * 9 {
        "saturated"
    } else {
        "up"
    };
    let draining = state.shutdown.is_cancelled();
    let healthy = database.status == "up" && queue_status == "up" && !draining;
    Json(json!({
        "status": if healthy { "healthy" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "instance": state.status.instance_id,
        "uptime_seconds": state.started.elapsed().as_secs(),
        "active_calls": state.metrics.active_calls.get(),
        "shutting_down": draining,
        "checks": {
            "database": database,
            "event_queue": {"status": queue_status, "depth": depth, "capacity": capacity},
            "whatsapp_api": {"status": if state.status.whatsapp_configured { "configured" } else { "not_configured" }},
            "webhook_signature": {"status": state.status.webhook_signature},
            "ai": {"status": if state.status.ai_configured { "configured" } else { "not_configured" }},
        },
    }))
}

/// Readiness: database reachable, migrations applied, not shutting down.
pub async fn ready(State(state): State<AppState>) -> Response {
    let mut problems = Vec::new();
    if state.shutdown.is_cancelled() {
        problems.push("shutting down".to_owned());
    }
    let database = probe_database(&state).await;
    if let Some(error) = &database.error {
        problems.push(format!("database: {error}"));
    } else {
        match state.store.migration_status().await {
            Ok(status) if status.is_current() => {}
            Ok(status) => problems.push(format!(
                "database schema: {} of {} migrations applied, {} unknown to this version",
                status.applied, status.known, status.foreign
            )),
            Err(err) => problems.push(format!("database schema: {err}")),
        }
    }
    if problems.is_empty() {
        (StatusCode::OK, Json(json!({"ready": true}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "problems": problems})),
        )
            .into_response()
    }
}
