//! The admin API under `/api`: `Authorization: Bearer $ADMIN_TOKEN`, JSON in and out,
//! described in `docs/openapi.yaml`. Off (404) without `ADMIN_TOKEN`.
//!
//! Calls: `POST /api/calls` places one, `GET /api/calls` lists them, `GET /api/calls/{id}`
//! shows one with its event log, `POST /api/calls/{id}/hangup` ends it,
//! `GET /api/calls/{id}/events` streams it live; `POST /api/phone/calls` takes a call from the
//! browser test phone ([`super::phone`]).

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;
use crate::calls::{HangUpError, PlaceCallError};
use crate::domain::WaId;
use crate::store::{CallEventRecord, CallFilter, CallRecord};
use crate::whatsapp::client::GraphError;

/// The admin routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/calls", post(place_call).get(list_calls))
        .route("/api/calls/{call_id}", get(show_call))
        .route("/api/calls/{call_id}/hangup", post(hang_up))
        .route(
            "/api/calls/{call_id}/events",
            get(super::phone::call_events),
        )
        .route("/api/phone/calls", post(super::phone::take_call))
}

/// A request that presented the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = &state.admin_token else {
            return Err(ApiError::NotFoundWith {
                code: "admin_api_disabled",
                message: "the admin API is off: set ADMIN_TOKEN to turn it on".to_owned(),
            });
        };
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let valid = presented.is_some_and(|token| {
            bool::from(token.as_bytes().ct_eq(expected.expose_secret().as_bytes()))
        });
        if valid {
            return Ok(Admin);
        }
        // Guessing tokens costs from the guesser's per-IP budget.
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0);
        let ip = state.limiter.client_ip(&parts.headers, peer);
        if let Err(retry_after) = state.limiter.check(ip) {
            return Err(ApiError::RateLimited { retry_after });
        }
        Err(ApiError::Unauthorized {
            code: "unauthorized",
            message: match presented {
                None => "send Authorization: Bearer <ADMIN_TOKEN>".to_owned(),
                Some(_) => "wrong admin token".to_owned(),
            },
        })
    }
}

pub(super) fn bad_json(rejection: &JsonRejection) -> ApiError {
    ApiError::BadRequest {
        code: "bad_json",
        message: rejection.body_text(),
    }
}

/// A WhatsApp number from request field `field`, or a 400 that names the field.
pub(super) fn phone_number(field: &str, value: &str) -> Result<WaId, ApiError> {
    WaId::parse(value).map_err(|e| ApiError::BadRequest {
        code: "invalid_phone_number",
        message: format!("`{field}`: {e}"),
    })
}

#[derive(Deserialize)]
struct PlaceCall {
    to: String,
    purpose: Option<String>,
    /// A reminder of the callee's to deliver on the call.
    reminder_id: Option<i64>,
}

async fn place_call(
    _: Admin,
    State(state): State<AppState>,
    body: Result<Json<PlaceCall>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|r| bad_json(&r))?;
    let to = phone_number("to", &body.to)?;
    let calls = state.calls.as_ref().ok_or_else(|| ApiError::Unavailable {
        code: "calls_disabled",
        message: "calls are not available on this instance".to_owned(),
        retry_after: None,
    })?;
    let purpose = body.purpose.filter(|p| !p.trim().is_empty());
    let call = calls
        .place_call(&to, purpose, body.reminder_id)
        .await
        .map_err(place_call_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"call_id": call.id, "state": call.state.as_str(), "wa_call_id": call.wa_call_id})),
    )
        .into_response())
}

fn place_call_error(err: PlaceCallError) -> ApiError {
    let conflict = |code, message: String| ApiError::Conflict { code, message };
    match err {
        PlaceCallError::AtCapacity(_) => ApiError::Unavailable {
            code: "at_capacity",
            message: err.to_string(),
            retry_after: Some(Duration::from_secs(30)),
        },
        PlaceCallError::NoSuchReminder => ApiError::NotFoundWith {
            code: "reminder_not_found",
            message: "the callee has no reminder with this id".to_owned(),
        },
        PlaceCallError::NotConfigured => ApiError::Unavailable {
            code: "whatsapp_not_configured",
            message: err.to_string(),
            retry_after: None,
        },
        PlaceCallError::Graph(GraphError::NoPermission) => conflict(
            "no_call_permission",
            "the user has not allowed calls from this business; send a call permission request first".to_owned(),
        ),
        PlaceCallError::Graph(GraphError::DailyLimit { next_allowed }) => ApiError::TooMany {
            code: "daily_call_limit",
            message: format!(
                "WhatsApp's daily limit of calls to this user is reached{}",
                next_allowed.map(|t| format!(" ({t})")).unwrap_or_default()
            ),
        },
        PlaceCallError::Graph(GraphError::RateLimited { code }) => ApiError::TooMany {
            code: "whatsapp_rate_limited",
            message: format!("WhatsApp asks to slow down ({code})"),
        },
        PlaceCallError::Graph(GraphError::ConcurrencyLimit) => ApiError::Unavailable {
            code: "whatsapp_concurrency_limit",
            message: "WhatsApp's limit of concurrent calls on this number is reached".to_owned(),
            retry_after: Some(Duration::from_secs(30)),
        },
        PlaceCallError::Graph(err @ (GraphError::Uncallable | GraphError::CallingDisabled)) => {
            conflict(err.label(), err.to_string())
        }
        PlaceCallError::Graph(err) => ApiError::BadGateway {
            code: "whatsapp_error",
            message: err.to_string(),
        },
        PlaceCallError::Media(err) => ApiError::Unavailable {
            code: "media_unavailable",
            message: err.to_string(),
            retry_after: Some(Duration::from_secs(5)),
        },
        PlaceCallError::Store(err) => ApiError::Internal(anyhow::Error::new(err)),
    }
}

#[derive(Deserialize)]
struct ListCalls {
    user: Option<String>,
    state: Option<String>,
    direction: Option<String>,
    limit: Option<i64>,
}

async fn list_calls(
    _: Admin,
    State(state): State<AppState>,
    query: Result<Query<ListCalls>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|r| ApiError::BadRequest {
        code: "bad_query",
        message: r.body_text(),
    })?;
    let user = match query.user {
        None => None,
        Some(wa_id) => {
            let wa_id = phone_number("user", &wa_id)?;
            match state
                .store
                .user_by_wa_id(&wa_id)
                .await
                .map_err(anyhow::Error::new)?
            {
                Some(user) => Some(user.id),
                None => return Ok(Json(json!({"calls": []})).into_response()),
            }
        }
    };
    let direction = query
        .direction
        .map(|d| d.parse())
        .transpose()
        .map_err(|_| ApiError::BadRequest {
            code: "bad_query",
            message: "`direction` must be inbound or outbound".to_owned(),
        })?;
    let calls = state
        .store
        .list_calls(&CallFilter {
            user,
            state: query.state,
            direction,
            limit: query.limit,
        })
        .await
        .map_err(anyhow::Error::new)?;
    Ok(Json(json!({"calls": calls})).into_response())
}

async fn show_call(
    _: Admin,
    State(state): State<AppState>,
    Path(call_id): Path<String>,
) -> Result<Response, ApiError> {
    let (call, events) = call_with_log(&state, &call_id).await?;
    Ok(Json(json!({"call": call, "events": events})).into_response())
}

/// A call's record and its log in order; 404 for an unknown call.
pub(super) async fn call_with_log(
    state: &AppState,
    call_id: &str,
) -> Result<(CallRecord, Vec<CallEventRecord>), ApiError> {
    let call = state
        .store
        .call(call_id)
        .await
        .map_err(anyhow::Error::new)?
        .ok_or(ApiError::NotFound)?;
    let events = state
        .store
        .call_events(call_id)
        .await
        .map_err(anyhow::Error::new)?;
    Ok((call, events))
}

async fn hang_up(
    _: Admin,
    State(state): State<AppState>,
    Path(call_id): Path<String>,
) -> Result<Response, ApiError> {
    let calls = state.calls.as_ref().ok_or(ApiError::NotFound)?;
    match calls.hang_up(&call_id).await {
        Ok(()) => {}
        Err(HangUpError::NotFound) => return Err(ApiError::NotFound),
        Err(HangUpError::Ended) => {
            return Err(ApiError::Conflict {
                code: "call_ended",
                message: "the call has already ended".to_owned(),
            })
        }
        Err(HangUpError::Store(err)) => return Err(ApiError::Internal(anyhow::Error::new(err))),
    }
    let call = state
        .store
        .call(&call_id)
        .await
        .map_err(anyhow::Error::new)?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(
        json!({"call_id": call.id, "state": call.state.as_str(), "end_reason": call.end_reason}),
    )
    .into_response())
}

#[cfg(test)]
mod tests {
    /// docs/openapi.yaml is what operators and their tools read: every route and every error
    /// code this module can answer must be in it.
    #[test]
    fn the_openapi_document_covers_every_route_and_error_code() {
        let source = concat!(include_str!("admin.rs"), include_str!("phone.rs"));
        let openapi = include_str!("../../../../docs/openapi.yaml");
        let quoted_after = |marker: &str| -> Vec<String> {
            source
                .split(marker)
                .skip(1)
                .filter_map(|rest| rest.split('"').next())
                .map(str::to_owned)
                .collect()
        };
        let routes = quoted_after(".route(\"");
        assert!(routes.len() >= 3, "routes found: {routes:?}");
        for route in routes {
            assert!(
                openapi.contains(&format!("\n  {route}:\n")),
                "docs/openapi.yaml has no path {route}"
            );
        }
        let mut codes = quoted_after("code: \"");
        // Codes that come from elsewhere: GraphError labels passed through, the shared ones.
        codes.extend(
            [
                "uncallable",
                "calling_disabled",
                "not_found",
                "unauthorized",
            ]
            .map(String::from),
        );
        for code in codes {
            assert!(
                openapi.contains(&format!("`{code}`")),
                "docs/openapi.yaml does not mention the error code `{code}`"
            );
        }
    }
}
