//! `loadgen`: N concurrent WhatsApp calls against the bridge's release binary, on loopback, and
//! what they cost it.
//!
//! It plays WhatsApp's side: a fake Graph API (fakes::graph) and one WhatsApp-like caller per
//! call (str0m, ice-lite, WhatsApp's offer, real DTLS-SRTP over UDP). It starts the bridge with
//! `VOICE_AGENT=echo`, sends each call's signed `connect` webhook, applies the bridge's answer
//! from `pre_accept`, streams Opus-sized packets once connected and checks every echo. At the
//! end it sends the `terminate` webhooks, checks `/health` falls back to 0 active calls, and
//! stops the bridge with SIGTERM.
//!
//! With `--model` it plays OpenAI's side too: the bridge runs `VOICE_AGENT=realtime` against a
//! fake Realtime API (fakes::realtime) whose answerer hands every model leg's offer to a fake
//! model peer of ours ([`models`]). The model greets at once when asked and then echoes every
//! caller packet, so each round trip is caller → bridge → model → bridge → caller: four media
//! streams per call, all relayed by the bridge. It also times `connect` → the greeting's first
//! packet at the caller, and each relay on its own.
//!
//! ```text
//! cargo build --release -p whatsapp-bridge -p loadgen
//! target/release/loadgen --calls 500 --bridge target/release/whatsapp-bridge
//! target/release/loadgen --calls 300 --model --bridge target/release/whatsapp-bridge
//! ```
//!
//! One JSON line goes to stdout (and is appended to `--output`), a summary to stderr. The exit
//! status is 1 when any call failed.
// A command-line tool: its output is the point.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod models;
mod peers;
mod proc;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::peers::{Control, Outcome, Peers};
use crate::proc::{Sample, Sampler};

const APP_SECRET: &str = "loadgen-app-secret";
const PHONE_NUMBER_ID: &str = "100000000000001";
const ACCESS_TOKEN: &str = "loadgen-graph-token";

#[derive(Parser, Debug)]
#[command(
    about = "N concurrent WhatsApp calls through the bridge's echo agent (or, with --model, a fake realtime model), measured"
)]
struct Args {
    /// Concurrent calls.
    #[arg(long, default_value_t = 100)]
    calls: usize,
    /// Seconds every call streams together, once all are up.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Calls started per second.
    #[arg(long, default_value_t = 20)]
    ramp: u32,
    /// The bridge binary (the release build).
    #[arg(long)]
    bridge: PathBuf,
    /// ECHO_DELAY_MS for the bridge (0: echo at once, so the round trip is the bridge's own).
    #[arg(long, default_value_t = 0)]
    echo_delay_ms: u64,
    /// Answer the calls with the realtime voice agent (VOICE_AGENT=realtime) and a fake model
    /// per call that greets at once and echoes the caller: each call has a model leg.
    #[arg(long)]
    model: bool,
    /// A name for this run in the JSON.
    #[arg(long, default_value = "whatsapp-bridge")]
    label: String,
    /// Append the JSON line to this file too.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Keep the bridge's directory (database, log) and print where it is.
    #[arg(long)]
    keep: bool,
    /// More settings for the bridge, NAME=VALUE (repeatable), e.g. RTC_REALTIME_PRIORITY=true.
    #[arg(long = "bridge-env", value_parser = parse_env)]
    bridge_env: Vec<(String, String)>,
}

fn parse_env(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{value}` is not NAME=VALUE"))
}

/// What the main side knows about one call.
#[derive(Default, Clone)]
struct Signalling {
    webhook_at: Option<Instant>,
    /// The same, in ns since the epoch (to compare with the kernel's receive times).
    webhook_ns: Option<u64>,
    webhook_ack: Option<Duration>,
    webhook_status: Option<u16>,
    answer_at: Option<Instant>,
    graph_violation: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("loadgen: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("loadgen: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let graph = fakes::graph::FakeGraph::start().await;
    let peers = Arc::new(Peers::start(args.calls, args.model)?);
    let realtime = if args.model {
        Some(fake_realtime(peers.clone()).await)
    } else {
        None
    };
    let http_port = free_tcp_port()?;
    let udp_port = free_udp_port()?;
    let mut bridge = start_bridge(
        &args,
        dir.path(),
        &graph.url,
        realtime.as_ref(),
        http_port,
        udp_port,
    )?;
    let base = format!("http://127.0.0.1:{http_port}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let outcome = measure(
        &args,
        &graph,
        realtime.as_ref(),
        peers,
        &client,
        &base,
        bridge.id(),
    )
    .await;
    stop_bridge(&mut bridge);
    if args.keep {
        let kept = dir.keep();
        eprintln!("loadgen: kept {}", kept.display());
    }
    let result = outcome?;
    println!("{result}");
    if let Some(path) = &args.output {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        writeln!(file, "{result}")?;
    }
    Ok(result["ok"] == result["calls"] && result["misrouted"] == 0)
}

/// The fake Realtime API, answering every model leg's offer with a model peer on the peers
/// thread (the offer goes over the control channel, the answer comes back on a oneshot).
async fn fake_realtime(peers: Arc<Peers>) -> fakes::realtime::FakeRealtime {
    let realtime = fakes::realtime::FakeRealtime::start().await;
    realtime.set_answerer(Arc::new(move |offer| {
        let peers = peers.clone();
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            peers.send(Control::ModelOffer { offer, reply });
            answer
                .await
                .map_err(|_| "the peers thread stopped".to_owned())?
        })
    }));
    realtime
}

async fn measure(
    args: &Args,
    graph: &fakes::graph::FakeGraph,
    realtime: Option<&fakes::realtime::FakeRealtime>,
    peers: Arc<Peers>,
    client: &reqwest::Client,
    base: &str,
    pid: u32,
) -> anyhow::Result<Value> {
    wait_healthy(client, base).await?;
    let sampler = Sampler::start(pid)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = sampler.latest();

    let calls: Arc<Mutex<Vec<Signalling>>> =
        Arc::new(Mutex::new(vec![Signalling::default(); args.calls]));
    let watcher = tokio::spawn(watch_graph(graph.watch(), peers.clone(), calls.clone()));

    // Ramp: one connect webhook every 1/ramp s; the posts run concurrently so a slow
    // acknowledgement does not slow the ramp.
    let run_start = sampler.latest();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.ramp)));
    let mut posts = Vec::with_capacity(args.calls);
    for idx in 0..args.calls {
        tick.tick().await;
        let (reply, offer) = oneshot::channel();
        peers.send(Control::Offer { idx, reply });
        let offer = offer.await.context("peers thread stopped")?;
        let body = calls_webhook(json!({
            "id": wacid(idx), "from": format!("4477009{idx:05}"), "to": "15550783881",
            "event": "connect", "timestamp": "1764182400", "direction": "USER_INITIATED",
            "session": {"sdp_type": "offer", "sdp": offer}
        }));
        let client = client.clone();
        let url = format!("{base}/whatsapp-call");
        let calls = calls.clone();
        posts.push(tokio::spawn(async move {
            let started = Instant::now();
            {
                let mut calls = lock(&calls);
                calls[idx].webhook_at = Some(started);
                calls[idx].webhook_ns = Some(peers::realtime_ns());
            }
            let status = post_signed(&client, &url, body).await;
            let mut calls = lock(&calls);
            calls[idx].webhook_ack = Some(started.elapsed());
            calls[idx].webhook_status = status;
        }));
    }
    for post in posts {
        let _ = post.await;
    }
    // Every call has had its chance to connect (20 s from its webhook, like the anchor).
    tokio::time::sleep(Duration::from_secs(2)).await;

    let steady_start = sampler.latest();
    peers.send(Control::Steady);
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    let steady_end = sampler.latest();
    peers.send(Control::StopSending);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (reply, outcome) = oneshot::channel();
    peers.send(Control::Finish { reply });
    let outcome = outcome.await.context("peers thread stopped")?;

    // Hang up: one terminate webhook per call, as WhatsApp sends them.
    let mut terminate_errors = 0;
    let webhook_url = format!("{base}/whatsapp-call");
    for chunk in (0..args.calls).collect::<Vec<_>>().chunks(32) {
        let mut posts = Vec::new();
        for &idx in chunk {
            let body = calls_webhook(json!({
                "id": wacid(idx), "from": format!("4477009{idx:05}"), "to": "15550783881",
                "event": "terminate", "timestamp": "1764182460", "direction": "USER_INITIATED",
                "status": "COMPLETED", "start_time": "1764182400", "end_time": "1764182460",
                "duration": 60
            }));
            posts.push(post_signed(client, &webhook_url, body));
        }
        for status in futures::future::join_all(posts).await {
            if status != Some(200) {
                terminate_errors += 1;
            }
        }
    }
    let active_after = wait_no_active_calls(client, base).await;
    let run_end = sampler.latest();
    watcher.abort();
    let peak_rss_kb = sampler.peak_rss_kb();
    let signalling = lock(&calls).clone();
    let bridge_packets = bridge_packet_counts(client, base).await;
    let mut result = summarize(
        args,
        &signalling,
        outcome,
        Window {
            idle,
            run_start,
            run_end,
            steady_start,
            steady_end,
            peak_rss_kb,
        },
        terminate_errors,
        active_after,
        graph,
        realtime,
    );
    result["bridge_packets"] = bridge_packets;
    Ok(result)
}

/// The bridge's own packet counters from `/metrics`: received (`in`), sent (`out`), and those
/// that took its fast paths (`fast_in`, `fast_out`: `RTC_FAST_RECEIVE`, `RTC_FAST_SEND`).
async fn bridge_packet_counts(client: &reqwest::Client, base: &str) -> Value {
    let Ok(response) = client.get(format!("{base}/metrics")).send().await else {
        return json!(null);
    };
    let text = response.text().await.unwrap_or_default();
    let read = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
    };
    json!({
        "in": read("whatsapp_bridge_media_packets_total{direction=\"in\"}"),
        "out": read("whatsapp_bridge_media_packets_total{direction=\"out\"}"),
        "fast_in": read("whatsapp_bridge_media_packets_fast_total{direction=\"in\"}"),
        "fast_out": read("whatsapp_bridge_media_packets_fast_total{direction=\"out\"}"),
    })
}

/// Applies the bridge's answer as soon as the fake Graph receives it.
async fn watch_graph(
    mut requests: tokio::sync::mpsc::UnboundedReceiver<fakes::graph::Recorded>,
    peers: Arc<Peers>,
    calls: Arc<Mutex<Vec<Signalling>>>,
) {
    while let Some(request) = requests.recv().await {
        let call_id = request.body["call_id"].as_str().unwrap_or_default();
        let Some(idx) = call_id
            .strip_prefix("wacid.LOAD")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let violation =
            if request.authorization.as_deref() != Some(&format!("Bearer {ACCESS_TOKEN}")) {
                Some("wrong access token".to_owned())
            } else if !request.path.contains(PHONE_NUMBER_ID) {
                Some(format!("wrong phone number id in {}", request.path))
            } else {
                None
            };
        let mut calls = lock(&calls);
        let Some(call) = calls.get_mut(idx) else {
            continue;
        };
        if let Some(violation) = violation {
            call.graph_violation.get_or_insert(violation);
        }
        match request.action.as_str() {
            "pre_accept" | "accept" => {
                if request.body["session"]["sdp_type"] != "answer" {
                    call.graph_violation
                        .get_or_insert("sdp_type is not answer".to_owned());
                }
                if call.answer_at.is_none() {
                    call.answer_at = Some(Instant::now());
                    let sdp = request.body["session"]["sdp"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    peers.send(Control::Answer { idx, sdp });
                }
            }
            other => {
                call.graph_violation
                    .get_or_insert(format!("the bridge sent {other}"));
            }
        }
    }
}

struct Window {
    idle: Sample,
    run_start: Sample,
    run_end: Sample,
    steady_start: Sample,
    steady_end: Sample,
    peak_rss_kb: u64,
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    args: &Args,
    signalling: &[Signalling],
    outcome: Outcome,
    window: Window,
    terminate_errors: usize,
    active_after: Option<i64>,
    graph: &fakes::graph::FakeGraph,
    realtime: Option<&fakes::realtime::FakeRealtime>,
) -> Value {
    let mut answer_us = Vec::new();
    let mut setup_us = Vec::new();
    let mut first_model_audio_us = Vec::new();
    let mut ack_us = Vec::new();
    let (mut ok, mut sent, mut echoed, mut duplicates, mut misrouted) = (0, 0, 0, 0, 0);
    let mut failures: HashMap<String, usize> = HashMap::new();
    for (sig, call) in signalling.iter().zip(&outcome.calls) {
        if let (Some(webhook), Some(answer)) = (sig.webhook_at, sig.answer_at) {
            answer_us.push(us(answer.saturating_duration_since(webhook)));
        }
        if let Some(ack) = sig.webhook_ack {
            ack_us.push(us(ack));
        }
        let setup = match (sig.webhook_at, call.first_echo_at) {
            (Some(webhook), Some(echo)) => Some(echo.saturating_duration_since(webhook)),
            _ => None,
        };
        if let Some(setup) = setup {
            setup_us.push(us(setup));
        }
        let first_model_audio = match (sig.webhook_ns, call.first_model_audio_ns) {
            (Some(webhook), Some(audio)) => {
                Some(Duration::from_nanos(audio.saturating_sub(webhook)))
            }
            _ => None,
        };
        if let Some(first) = first_model_audio {
            first_model_audio_us.push(us(first));
        }
        let failure = if sig.webhook_status != Some(200) {
            Some(format!("webhook status {:?}", sig.webhook_status))
        } else if let Some(violation) = &sig.graph_violation {
            Some(violation.clone())
        } else if let Some(error) = &call.error {
            Some(error.clone())
        } else if setup.is_none_or(|s| s > Duration::from_secs(20)) {
            Some("no echo within 20 s".to_owned())
        } else if args.model && first_model_audio.is_none_or(|s| s > Duration::from_secs(20)) {
            Some("no model audio within 20 s".to_owned())
        } else {
            None
        };
        match failure {
            Some(failure) => *failures.entry(failure).or_default() += 1,
            None => ok += 1,
        }
        sent += call.sent;
        echoed += call.echoed;
        duplicates += call.duplicates;
        misrouted += call.misrouted;
    }
    // The steady window alone (every call up, none starting): the relay without call setup's
    // DTLS handshakes and session work.
    let steady = |samples: &[u32]| samples.get(outcome.steady.clone()).unwrap_or(&[]).to_vec();
    let mut rtt_steady_us = steady(&outcome.rtt_us);
    let mut relay_steady_us = steady(&outcome.to_model_us);
    relay_steady_us.extend(steady(&outcome.to_caller_us));
    let mut rtt_us = outcome.rtt_us;
    let mut lag_us = outcome.send_lag_us;
    let mut to_model_us = outcome.to_model_us;
    let mut to_caller_us = outcome.to_caller_us;
    let mut model_hold_us = outcome.model_hold_us;
    // Each relay on its own, both directions together: what "relay latency" means with a model.
    let mut relay_us: Vec<u32> = to_model_us.iter().chain(&to_caller_us).copied().collect();
    let loss = if sent == 0 {
        0.0
    } else {
        (sent.saturating_sub(echoed)) as f64 / sent as f64
    };
    let cores = |from: &Sample, to: &Sample| {
        let seconds = to.at.saturating_duration_since(from.at).as_secs_f64();
        if seconds > 0.0 {
            (to.cpu_seconds - from.cpu_seconds) / seconds
        } else {
            0.0
        }
    };
    let steady_cores = cores(&window.steady_start, &window.steady_end);
    let run_cores = cores(&window.run_start, &window.run_end);
    let gen_steady = cores(&window.steady_start.own(), &window.steady_end.own());
    let rss_per_call_kb = if ok > 0 {
        window.peak_rss_kb.saturating_sub(window.idle.rss_kb) / ok as u64
    } else {
        0
    };
    // In the steady window every working call streams 50 packets a second (each relayed twice
    // with a model).
    let packets_per_second = ok as f64 * 50.0;
    let cpu_us_per_packet = if packets_per_second > 0.0 {
        steady_cores * 1e6 / packets_per_second
    } else {
        0.0
    };
    let graph_counts: HashMap<String, usize> =
        graph
            .actions()
            .into_iter()
            .fold(HashMap::new(), |mut m, a| {
                *m.entry(a).or_default() += 1;
                m
            });
    let mut result = json!({
        "label": args.label,
        "calls": args.calls,
        "ok": ok,
        "duration_s": args.duration,
        "ramp_per_s": args.ramp,
        "echo_delay_ms": args.echo_delay_ms,
        "bridge_env": args.bridge_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "packets_sent": sent,
        "packets_echoed": echoed,
        "loss": round(loss * 100.0, 4),
        "duplicates": duplicates,
        "misrouted": misrouted,
        "rtt_ms": dist(&mut rtt_us, 1000.0),
        "rtt_steady_ms": dist(&mut rtt_steady_us, 1000.0),
        "setup_ms": dist(&mut setup_us, 1000.0),
        "answer_ms": dist(&mut answer_us, 1000.0),
        "webhook_ack_ms": dist(&mut ack_us, 1000.0),
        "bridge_cpu_cores_steady": round(steady_cores, 3),
        "bridge_cpu_cores_run": round(run_cores, 3),
        "bridge_cpu_us_per_echoed_packet": round(cpu_us_per_packet, 2),
        "bridge_rss_idle_mb": round(window.idle.rss_kb as f64 / 1024.0, 1),
        "bridge_rss_peak_mb": round(window.peak_rss_kb as f64 / 1024.0, 1),
        "bridge_rss_per_call_kb": rss_per_call_kb,
        "loadgen_cpu_cores_steady": round(gen_steady, 3),
        "loadgen_send_lag_ms": dist(&mut lag_us, 1000.0),
        "graph_requests": graph_counts,
        "terminate_webhook_errors": terminate_errors,
        "active_calls_after_terminate": active_after,
        "failures": failures,
        "model": args.model,
        // caller → bridge, bridge → model, model → bridge, bridge → caller
        "streams_per_call": if args.model { 4 } else { 2 },
    });
    if args.model {
        let models = &outcome.models;
        let model_errors: HashMap<String, usize> = models
            .iter()
            .filter_map(|m| m.error.clone())
            .fold(HashMap::new(), |mut m, e| {
                *m.entry(e).or_default() += 1;
                m
            });
        let first = dist(&mut first_model_audio_us, 1000.0);
        let extra = json!({
            "first_model_audio_ms": first,
            "first_model_audio_ms_p50": first["p50"],
            "first_model_audio_ms_p99": first["p99"],
            "calls_with_model_audio": outcome.calls.iter().filter(|c| c.first_model_audio_ns.is_some()).count(),
            "relay_ms": dist(&mut relay_us, 1000.0),
            "relay_steady_ms": dist(&mut relay_steady_us, 1000.0),
            "relay_to_model_ms": dist(&mut to_model_us, 1000.0),
            "relay_to_caller_ms": dist(&mut to_caller_us, 1000.0),
            "model_peer_hold_ms": dist(&mut model_hold_us, 1000.0),
            "bridge_cpu_us_per_relayed_packet": round(cpu_us_per_packet / 2.0, 2),
            "model_legs": models.len(),
            "model_legs_connected": models.iter().filter(|m| m.connected).count(),
            "model_channels_open": models.iter().filter(|m| m.channel_open).count(),
            "model_greetings": models.iter().map(|m| m.greetings).sum::<u64>(),
            "model_echoed": models.iter().map(|m| m.echoed).sum::<u64>(),
            "model_errors": model_errors,
            "realtime_requests": realtime_counts(realtime),
        });
        if let (Some(result), Some(extra)) = (result.as_object_mut(), extra.as_object()) {
            result.extend(extra.clone());
        }
        eprintln!(
            "{}: model legs: first model audio p50 {} p99 {} ms after connect; relay (each way) p50 {} p99 {} ms (steady window p50 {} p99 {} ms), caller → model p99 {} ms, model → caller p99 {} ms (round trip p99 {} ms includes the model peer's own p99 {} ms)",
            args.label,
            result["first_model_audio_ms"]["p50"],
            result["first_model_audio_ms"]["p99"],
            result["relay_ms"]["p50"],
            result["relay_ms"]["p99"],
            result["relay_steady_ms"]["p50"],
            result["relay_steady_ms"]["p99"],
            result["relay_to_model_ms"]["p99"],
            result["relay_to_caller_ms"]["p99"],
            result["rtt_ms"]["p99"],
            result["model_peer_hold_ms"]["p99"],
        );
    }
    eprintln!(
        "{}: {}/{} calls ok, loss {:.3}%, rtt p50 {} p99 {} ms, setup p50 {} p99 {} ms, webhook→pre_accept p50 {} p99 {} ms; bridge {:.3} cores steady ({:.1} µs/packet), RSS {:.1} MB peak ({} KB/call over {:.1} MB idle); loadgen {:.3} cores",
        args.label,
        ok,
        args.calls,
        loss * 100.0,
        result["rtt_ms"]["p50"],
        result["rtt_ms"]["p99"],
        result["setup_ms"]["p50"],
        result["setup_ms"]["p99"],
        result["answer_ms"]["p50"],
        result["answer_ms"]["p99"],
        steady_cores,
        cpu_us_per_packet,
        window.peak_rss_kb as f64 / 1024.0,
        rss_per_call_kb,
        window.idle.rss_kb as f64 / 1024.0,
        gen_steady,
    );
    result
}

/// The fake Realtime API's requests, by step and status (`calls 201`).
fn realtime_counts(realtime: Option<&fakes::realtime::FakeRealtime>) -> HashMap<String, usize> {
    let requests = realtime.map(|r| r.requests()).unwrap_or_default();
    requests.iter().fold(HashMap::new(), |mut m, r| {
        let step = match r.step {
            fakes::realtime::Step::ClientSecrets => "client_secrets",
            fakes::realtime::Step::Calls => "calls",
        };
        *m.entry(format!("{step} {}", r.status)).or_default() += 1;
        m
    })
}

/// p50/p90/p99/max of `values` (in `unit`s per millisecond).
fn dist<T: Copy + Ord + Into<f64>>(values: &mut [T], per_ms: f64) -> Value {
    if values.is_empty() {
        return json!(null);
    }
    values.sort_unstable();
    let at = |q: f64| {
        let i = ((values.len() as f64 - 1.0) * q).round() as usize;
        round(values[i].into() / per_ms, 3)
    };
    json!({"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": at(1.0), "count": values.len()})
}

fn us(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

fn wacid(idx: usize) -> String {
    format!("wacid.LOAD{idx:06}")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn calls_webhook(call: Value) -> String {
    let from = call["from"].as_str().unwrap_or_default().to_owned();
    fakes::webhook::calls_envelope(PHONE_NUMBER_ID, &from, "Load", call)
}

/// POSTs a webhook signed as Meta signs it; the status, or None when it did not get through.
async fn post_signed(client: &reqwest::Client, url: &str, body: String) -> Option<u16> {
    let signature = fakes::webhook::signature(APP_SECRET, body.as_bytes());
    client
        .post(url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature)
        .body(body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

fn start_bridge(
    args: &Args,
    dir: &std::path::Path,
    graph_url: &str,
    realtime: Option<&fakes::realtime::FakeRealtime>,
    http_port: u16,
    udp_port: u16,
) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join("bridge.log"))?;
    let database = format!("sqlite://{}", dir.join("bridge.db").display());
    let agent: Vec<(&str, String)> = match realtime {
        Some(realtime) => vec![
            ("VOICE_AGENT", "realtime".to_owned()),
            ("OPENAI_API_KEY", fakes::realtime::API_KEY.to_owned()),
            ("OPENAI_BASE_URL", realtime.openai_base_url()),
        ],
        None => vec![
            ("VOICE_AGENT", "echo".to_owned()),
            ("ECHO_DELAY_MS", args.echo_delay_ms.to_string()),
        ],
    };
    let child = Command::new(&args.bridge)
        // Its own directory: no developer's .env is picked up.
        .current_dir(dir)
        .env("PORT", http_port.to_string())
        .env("WHATSAPP_APP_SECRET", APP_SECRET)
        .env("WHATSAPP_PHONE_NUMBER_ID", PHONE_NUMBER_ID)
        .env("WHATSAPP_ACCESS_TOKEN", ACCESS_TOKEN)
        .env("WHATSAPP_VERIFY_TOKEN", "loadgen-verify-token")
        .env("WHATSAPP_GRAPH_URL", graph_url)
        .env("WHATSAPP_API_VERSION", "v23.0")
        .env("RTC_UDP_PORT", udp_port.to_string())
        .env("RTC_BIND_ADDRESS", "127.0.0.1")
        .env("STUN_SERVER", "none")
        .env("MAX_CONCURRENT_CALLS", (args.calls + 10).to_string())
        .envs(agent)
        .env("DATABASE_URL", database)
        .env("LOG_LEVEL", "warn")
        .env("LOG_FORMAT", "json")
        .envs(args.bridge_env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", args.bridge.display()))?;
    Ok(child)
}

fn stop_bridge(bridge: &mut Child) {
    if let Ok(pid) = i32::try_from(bridge.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = bridge.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("loadgen: the bridge did not stop within 15 s of SIGTERM; killing it");
    let _ = bridge.kill();
    let _ = bridge.wait();
}

async fn wait_healthy(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client.get(format!("{base}/health")).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the bridge did not answer /health within 60 s (see its log with --keep)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/health`'s `active_calls` once it is 0, or what it still says after 10 s.
async fn wait_no_active_calls(client: &reqwest::Client, base: &str) -> Option<i64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let active = async {
            let health: Value = client
                .get(format!("{base}/health"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            health["active_calls"].as_i64()
        }
        .await;
        if active == Some(0) || Instant::now() > deadline {
            return active;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn free_udp_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
