//! The load generator still measures what it says: a few calls through the bridge binary built
//! next to it.

use std::path::PathBuf;
use std::process::Command;

/// The `whatsapp-bridge` binary cargo built for this test run (same profile directory).
fn bridge_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    // target/<profile>/deps/smoke-<hash> → target/<profile>/whatsapp-bridge
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("profile directory");
    let bridge = profile_dir.join("whatsapp-bridge");
    assert!(
        bridge.exists(),
        "{} is missing: run the workspace's tests (cargo nextest run --workspace), which build it",
        bridge.display()
    );
    bridge
}

/// Runs loadgen for three calls of two seconds against the bridge binary, with `extra`
/// arguments; returns the JSON line it prints.
fn loadgen(extra: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--calls", "3", "--duration", "2", "--ramp", "10"])
        .args(extra)
        .arg("--bridge")
        .arg(bridge_binary())
        .output()
        .expect("loadgen runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "loadgen failed: {stderr}");
    serde_json::from_slice(&output.stdout).expect("one JSON line on stdout")
}

#[test]
fn a_few_calls_stream_through_the_bridge_and_every_packet_comes_back() {
    let result = loadgen(&[]);
    assert_eq!(result["ok"], 3, "{result}");
    assert_eq!(result["misrouted"], 0, "{result}");
    assert_eq!(result["active_calls_after_terminate"], 0, "{result}");
    let sent = result["packets_sent"].as_u64().expect("sent");
    let echoed = result["packets_echoed"].as_u64().expect("echoed");
    assert!(
        sent >= 3 * 50 * 2,
        "three calls streamed for two seconds: {result}"
    );
    assert!(echoed * 100 >= sent * 99, "under 1% lost: {result}");
    assert!(result["rtt_ms"]["p50"].as_f64().is_some(), "{result}");
    assert_eq!(
        result["graph_requests"]["pre_accept"], 3,
        "one pre_accept per call: {result}"
    );
    assert!(
        result["bridge_rss_peak_mb"].as_f64().unwrap_or(0.0) > 0.0,
        "the bridge's memory was read: {result}"
    );
}

#[test]
fn with_a_model_leg_every_call_hears_the_greeting_and_every_packet_comes_back_through_the_model() {
    let result = loadgen(&["--model"]);
    assert_eq!(result["model"], true, "{result}");
    assert_eq!(result["streams_per_call"], 4, "{result}");
    assert_eq!(result["ok"], 3, "{result}");
    // The path through the model: a session per call, its greeting heard by every caller.
    assert_eq!(
        result["realtime_requests"]["client_secrets 200"], 3,
        "{result}"
    );
    assert_eq!(result["realtime_requests"]["calls 201"], 3, "{result}");
    assert_eq!(result["model_legs_connected"], 3, "{result}");
    assert_eq!(
        result["model_greetings"], 3,
        "one greeting per call: {result}"
    );
    assert_eq!(result["calls_with_model_audio"], 3, "{result}");
    assert!(
        result["first_model_audio_ms_p50"].as_f64().is_some(),
        "{result}"
    );
    // Every packet went caller → bridge → model → bridge → caller, and none was lost.
    let sent = result["packets_sent"].as_u64().expect("sent");
    assert!(
        sent >= 3 * 50 * 2,
        "three calls streamed for two seconds: {result}"
    );
    assert_eq!(result["packets_echoed"], sent, "no loss: {result}");
    assert!(
        result["model_echoed"].as_u64().expect("model echoed") >= sent,
        "every echo came from the model: {result}"
    );
    assert_eq!(result["misrouted"], 0, "{result}");
    assert!(result["relay_ms"]["p50"].as_f64().is_some(), "{result}");
    assert_eq!(result["active_calls_after_terminate"], 0, "{result}");
    // By default the bridge did the SRTP of every packet itself: every packet it received
    // (callers' and models') and every packet it sent (to callers and to models).
    let counts = &result["bridge_packets"];
    let received = counts["in"].as_f64().expect("in");
    assert!(received >= 2.0 * sent as f64, "{result}");
    assert_eq!(counts["fast_in"], counts["in"], "{result}");
    assert_eq!(counts["fast_out"], counts["out"], "{result}");
    assert!(
        counts["out"].as_f64().expect("out") >= 2.0 * sent as f64,
        "{result}"
    );
    assert_eq!(
        result["graph_requests"]["accept"], 3,
        "every call accepted once its model session was up: {result}"
    );
}

#[test]
fn with_str0m_carrying_the_audio_full_calls_lose_nothing_too() {
    let result = loadgen(&[
        "--model",
        "--bridge-env",
        "RTC_FAST_RECEIVE=false",
        "--bridge-env",
        "RTC_FAST_SEND=false",
    ]);
    assert_eq!(result["ok"], 3, "{result}");
    assert_eq!(result["model_greetings"], 3, "{result}");
    let sent = result["packets_sent"].as_u64().expect("sent");
    assert!(sent >= 3 * 50 * 2, "{result}");
    assert_eq!(result["packets_echoed"], sent, "no loss: {result}");
    assert_eq!(result["misrouted"], 0, "{result}");
    let counts = &result["bridge_packets"];
    assert!(
        counts["in"].as_f64().expect("in") >= 2.0 * sent as f64,
        "{result}"
    );
    assert_eq!(counts["fast_in"], 0.0, "str0m's receive path: {result}");
    assert_eq!(counts["fast_out"], 0.0, "str0m's send path: {result}");
}
