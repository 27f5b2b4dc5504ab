//! The Graph API client against a fake Graph server: request shapes, typed errors, the retry
//! policy, the circuit breaker.

use std::time::Duration;

use secrecy::SecretString;
use whatsapp_bridge::domain::{PhoneNumberId, WaCallId, WaId};
use whatsapp_bridge::telemetry::Metrics;
use whatsapp_bridge::whatsapp::client::{GraphClient, GraphError};

use fakes::graph::{FakeGraph, Reply};

fn client(url: &str) -> GraphClient {
    GraphClient::new(
        &url.parse().expect("url"),
        "v23.0",
        &PhoneNumberId::parse("106540352242922").expect("id"),
        SecretString::from("graph-token".to_owned()),
        Metrics::new().expect("metrics"),
    )
    .expect("client")
}

fn call_id() -> WaCallId {
    WaCallId::parse("wacid.HBgLMTY1MDU1NTEyMzQVAgARGCAzRkM1RTQ0").expect("id")
}

#[tokio::test]
async fn call_actions_are_sent_in_metas_documented_shape() {
    let graph = FakeGraph::start().await;
    let client = client(&graph.url);
    client
        .pre_accept(&call_id(), "v=0 answer")
        .await
        .expect("pre_accept");
    client
        .accept(&call_id(), "v=0 answer", "call-0192")
        .await
        .expect("accept");
    client.reject(&call_id()).await.expect("reject");
    client.terminate(&call_id()).await.expect("terminate");
    let wacid = client
        .connect(
            &WaId::parse("16505551234").expect("id"),
            "v=0 offer",
            "call-0193",
        )
        .await
        .expect("connect");
    assert_eq!(wacid.as_str(), "wacid.FAKE5");

    let requests = graph.requests();
    assert!(requests
        .iter()
        .all(|r| r.path == "/v23.0/106540352242922/calls"));
    assert!(requests
        .iter()
        .all(|r| r.authorization.as_deref() == Some("Bearer graph-token")));
    let body = |i: usize| &requests[i].body;
    assert_eq!(body(0)["messaging_product"], "whatsapp");
    assert_eq!(body(0)["call_id"], call_id().as_str());
    assert_eq!(
        body(0)["session"]["sdp_type"],
        "answer",
        "pre_accept carries an answer"
    );
    assert_eq!(body(1)["action"], "accept");
    assert_eq!(body(1)["session"]["sdp"], "v=0 answer");
    assert_eq!(body(1)["biz_opaque_callback_data"], "call-0192");
    assert_eq!(
        body(2),
        &serde_json::json!({"messaging_product": "whatsapp", "call_id": call_id().as_str(), "action": "reject"})
    );
    assert_eq!(body(3)["action"], "terminate");
    assert_eq!(body(4)["to"], "16505551234");
    assert_eq!(body(4)["session"]["sdp_type"], "offer");
    assert_eq!(body(4)["biz_opaque_callback_data"], "call-0193");
}

#[tokio::test]
async fn metas_call_errors_become_typed_outcomes() {
    let graph = FakeGraph::start().await;
    let client = client(&graph.url);
    let to = WaId::parse("16505551234").expect("id");
    graph.script(
        "connect",
        [
            Reply::Error {
                status: 400,
                code: 138_006,
                details: "no permission",
            },
            Reply::Error {
                status: 400,
                code: 138_012,
                details: "next allowed 2026-11-27T09:00:00Z",
            },
            Reply::Error {
                status: 400,
                code: 138_002,
                details: "",
            },
            Reply::Error {
                status: 401,
                code: 190,
                details: "token expired",
            },
        ],
    );
    assert_eq!(
        client.connect(&to, "v=0", "c").await,
        Err(GraphError::NoPermission)
    );
    assert!(matches!(
        client.connect(&to, "v=0", "c").await,
        Err(GraphError::DailyLimit { next_allowed: Some(t) }) if t.contains("2026-11-27")
    ));
    assert_eq!(
        client.connect(&to, "v=0", "c").await,
        Err(GraphError::ConcurrencyLimit)
    );
    assert!(matches!(
        client.connect(&to, "v=0", "c").await,
        Err(GraphError::Unauthorized { .. })
    ));
    assert_eq!(graph.actions().len(), 4, "business answers are not retried");
}

#[tokio::test]
async fn a_failed_terminate_is_retried_but_a_connect_that_may_have_arrived_is_not() {
    let graph = FakeGraph::start().await;
    let client = client(&graph.url);
    graph.script("terminate", [Reply::Status(500)]);
    client
        .terminate(&call_id())
        .await
        .expect("the retry succeeds");
    assert_eq!(graph.actions(), ["terminate", "terminate"]);

    graph.script("connect", [Reply::Status(502)]);
    let err = client
        .connect(&WaId::parse("16505551234").expect("id"), "v=0", "c")
        .await
        .expect_err("no retry");
    assert!(
        matches!(err, GraphError::Api { status: 502, .. }),
        "{err:?}"
    );
    assert_eq!(
        graph.actions().iter().filter(|a| *a == "connect").count(),
        1,
        "never rings twice"
    );
}

#[tokio::test]
async fn a_slow_graph_api_times_out() {
    let graph = FakeGraph::start().await;
    let client = client(&graph.url)
        .with_timeout(Duration::from_millis(300))
        .expect("client");
    graph.script("accept", [Reply::Slow(Duration::from_secs(2))]);
    let err = client
        .accept(&call_id(), "v=0", "c")
        .await
        .expect_err("too slow");
    assert_eq!(err, GraphError::Timeout);
    assert_eq!(
        graph.actions(),
        ["accept"],
        "an accept that may have arrived is not repeated"
    );
}

#[tokio::test]
async fn an_unreachable_graph_api_is_retried_then_reported() {
    // Nothing listens on this port: the connection is refused, so nothing was delivered and
    // even a connect may be tried again.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", unused.local_addr().expect("addr"));
    drop(unused);
    let err = client(&url)
        .connect(&WaId::parse("16505551234").expect("id"), "v=0", "c")
        .await
        .expect_err("unreachable");
    assert!(matches!(err, GraphError::Transport(_)), "{err:?}");
    assert!(!err.to_string().contains("106540352242922"), "{err}");
}

#[tokio::test]
async fn repeated_outages_open_the_circuit_and_calls_fail_fast() {
    let graph = FakeGraph::start().await;
    let client = client(&graph.url);
    graph.script("terminate", std::iter::repeat_n(Reply::Status(503), 10));
    let first = client.terminate(&call_id()).await.expect_err("outage");
    assert!(
        matches!(first, GraphError::Api { status: 503, .. }),
        "{first:?}"
    );
    // Five consecutive failures (retries count) open the circuit.
    assert_eq!(
        client.terminate(&call_id()).await,
        Err(GraphError::CircuitOpen)
    );
    assert_eq!(graph.actions().len(), 5);
    assert_eq!(
        client.terminate(&call_id()).await,
        Err(GraphError::CircuitOpen)
    );
    assert_eq!(graph.actions().len(), 5, "an open circuit sends nothing");
}
