//! A WebRTC peer that behaves like OpenAI's realtime endpoint: it answers an SDP offer with
//! audio and the `oai-events` data channel, takes the active DTLS role (as OpenAI's answers
//! do), speaks the GA event protocol on the channel and sends Opus when it "talks"
//! (`shared/reference/platform-apis.md` A2.2, A2.6).
//!
//! [`model_rtc`] and [`answer`] are sans-IO, for simulations; [`ModelPeers`] starts one
//! [`ModelPeer`] per offer on a real UDP socket on loopback, for end-to-end tests.
//!
//! Its behaviour is scripted ([`Script`]): on `response.create` it answers with
//! `response.created`, a few hundred milliseconds of Opus, the transcript and `response.done`
//! with usage; when the caller's audio first arrives it can send scripted events (a
//! transcription, a function call) as if it had heard a request. Tests can also push any event
//! and drop the leg mid-call.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use str0m::change::SdpOffer;
use str0m::channel::ChannelId;
use str0m::format::{Codec, FormatParams};
use str0m::media::{Frequency, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// The payload of the Opus packets the fake model sends: a valid TOC byte (CELT fullband
/// 20 ms) and a marker tests recognise, then the packet's index.
pub const MODEL_AUDIO_MARKER: [u8; 2] = [0xf8, 0x4d];

/// An `Rtc` configured like OpenAI's endpoint: full ICE, Opus on 111.
pub fn model_rtc(now: Instant) -> Rtc {
    let mut config = RtcConfig::new().clear_codecs().set_rtp_mode(true);
    config.codec_config().add_config(
        Pt::new_with_value(111),
        None,
        Codec::Opus,
        Frequency::FORTY_EIGHT_KHZ,
        Some(2),
        FormatParams {
            min_p_time: Some(10),
            use_inband_fec: Some(true),
            ..FormatParams::default()
        },
    );
    config.build(now)
}

/// Answers an offer the way OpenAI does: DTLS active (the offer's `actpass` is read as
/// `passive`, which makes str0m take the active role).
///
/// # Errors
/// An offer str0m cannot parse or accept.
pub fn answer(rtc: &mut Rtc, offer: &str) -> Result<String, String> {
    let offer = offer.replace("a=setup:actpass", "a=setup:passive");
    let offer = SdpOffer::from_sdp_string(&offer).map_err(|e| e.to_string())?;
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| e.to_string())?;
    Ok(answer.to_sdp_string())
}

/// A check of a `session` object: `Err` carries the message the `error` event reports.
pub type SessionCheck = fn(&Value) -> Result<(), String>;

/// How the fake model behaves.
#[derive(Debug, Clone)]
pub struct Script {
    /// Opus packets (20 ms each) in every spoken response.
    pub reply_frames: usize,
    /// The transcript of every spoken response.
    pub reply_transcript: String,
    /// Events sent, in order, when the caller's audio first arrives (after the channel is
    /// open): what the model "heard" and does about it.
    pub on_caller_audio: Vec<Value>,
    /// Checks every `session.update`'s `session`; a refusal is answered with an `error` event.
    pub validate_session: Option<SessionCheck>,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            reply_frames: 10,
            reply_transcript: "Hello, this is Ziggy.".to_owned(),
            on_caller_audio: Vec::new(),
            validate_session: None,
        }
    }
}

/// What a [`ModelPeer`] has seen and done.
#[derive(Debug, Default, Clone)]
pub struct ModelObserved {
    /// ICE and DTLS are up.
    pub connected: bool,
    /// The event channel is open.
    pub channel_open: bool,
    /// The other side closed.
    pub closed: bool,
    /// Every client event received, parsed, in order.
    pub client_events: Vec<Value>,
    /// Caller audio received: (RTP timestamp, payload).
    pub audio_in: Vec<(u32, Vec<u8>)>,
    /// Opus packets sent.
    pub audio_out: usize,
    /// When the first Opus packet was sent.
    pub first_audio_out_at: Option<Instant>,
}

impl ModelObserved {
    /// The client events of one type.
    pub fn events_of(&self, kind: &str) -> Vec<&Value> {
        self.client_events
            .iter()
            .filter(|e| e["type"] == kind)
            .collect()
    }
}

enum Command {
    Event(Value),
    Drop,
}

/// One model leg's far side, on a real UDP socket on loopback.
#[derive(Clone)]
pub struct ModelPeer {
    /// The peer's address.
    pub addr: SocketAddr,
    commands: mpsc::UnboundedSender<Command>,
    observed: Arc<Mutex<ModelObserved>>,
}

impl ModelPeer {
    /// Sends a server event on the channel.
    pub fn send_event(&self, event: Value) {
        let _ = self.commands.send(Command::Event(event));
    }

    /// Drops the leg abruptly (the model's side going away mid-call): DTLS close and stop.
    pub fn drop_leg(&self) {
        let _ = self.commands.send(Command::Drop);
    }

    /// What the peer has seen so far.
    pub fn observed(&self) -> ModelObserved {
        self.observed.lock().expect("lock").clone()
    }

    /// Waits until `done` holds.
    ///
    /// # Panics
    /// When it does not within `limit`.
    pub async fn wait_for(
        &self,
        limit: Duration,
        done: impl Fn(&ModelObserved) -> bool,
    ) -> ModelObserved {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let observed = self.observed();
            if done(&observed) {
                return observed;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "model peer {} did not get there within {limit:?}: connected={}, channel={}, closed={}, {} events, {} packets in, {} out",
                self.addr,
                observed.connected,
                observed.channel_open,
                observed.closed,
                observed.client_events.len(),
                observed.audio_in.len(),
                observed.audio_out,
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Starts a [`ModelPeer`] for every offer it answers, and keeps them for the test.
#[derive(Clone, Default)]
pub struct ModelPeers {
    script: Arc<Mutex<Script>>,
    peers: Arc<Mutex<Vec<ModelPeer>>>,
}

impl ModelPeers {
    /// Peers that follow `script`.
    pub fn new(script: Script) -> Self {
        Self {
            script: Arc::new(Mutex::new(script)),
            peers: Arc::default(),
        }
    }

    /// Changes the script for peers started from now on.
    pub fn set_script(&self, script: Script) {
        *self.script.lock().expect("lock") = script;
    }

    /// Answers `offer` with a new peer on loopback.
    ///
    /// # Errors
    /// An offer the peer cannot use.
    pub async fn answer(&self, offer: String) -> Result<String, String> {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = socket.local_addr().map_err(|e| e.to_string())?;
        let mut rtc = model_rtc(Instant::now());
        rtc.add_local_candidate(Candidate::host(addr, "udp").map_err(|e| e.to_string())?);
        let sdp = answer(&mut rtc, &offer)?;
        let (commands, rx) = mpsc::unbounded_channel();
        let observed = Arc::new(Mutex::new(ModelObserved::default()));
        let script = self.script.lock().expect("lock").clone();
        tokio::spawn(run(State::new(rtc, script, observed.clone()), socket, rx));
        self.peers.lock().expect("lock").push(ModelPeer {
            addr,
            commands,
            observed,
        });
        Ok(sdp)
    }

    /// Every peer started so far, in order.
    pub fn peers(&self) -> Vec<ModelPeer> {
        self.peers.lock().expect("lock").clone()
    }

    /// Waits for the `n`th peer (0-based) to exist.
    ///
    /// # Panics
    /// When it does not within `limit`.
    pub async fn nth(&self, n: usize, limit: Duration) -> ModelPeer {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(peer) = self.peers().get(n) {
                return peer.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no model peer #{n} within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

struct State {
    rtc: Rtc,
    script: Script,
    observed: Arc<Mutex<ModelObserved>>,
    mid: Option<Mid>,
    channel: Option<ChannelId>,
    heard_caller: bool,
    seq: u64,
    rtp_time: u32,
    /// Opus packets still to send for the response being spoken, one per 20 ms.
    speaking: usize,
    next_frame: Option<Instant>,
    response: u64,
    events_sent: u64,
    /// Events waiting for the channel to open.
    outbox: Vec<Value>,
}

impl State {
    fn new(rtc: Rtc, script: Script, observed: Arc<Mutex<ModelObserved>>) -> Self {
        Self {
            rtc,
            script,
            observed,
            mid: None,
            channel: None,
            heard_caller: false,
            seq: 300,
            rtp_time: 1_000,
            speaking: 0,
            next_frame: None,
            response: 0,
            events_sent: 0,
            outbox: Vec::new(),
        }
    }

    fn send(&mut self, mut event: Value) {
        self.events_sent += 1;
        if event.get("event_id").is_none() {
            event["event_id"] = json!(format!("event_{}", self.events_sent));
        }
        let Some(channel) = self.channel else {
            self.outbox.push(event);
            return;
        };
        if let Some(mut channel) = self.rtc.channel(channel) {
            let _ = channel.write(false, event.to_string().as_bytes());
        }
    }

    fn on_client_event(&mut self, text: &str) {
        let Ok(event) = serde_json::from_str::<Value>(text) else {
            self.send(json!({"type": "error", "error": {"type": "invalid_request_error", "code": "invalid_json", "message": "not JSON"}}));
            return;
        };
        self.observed
            .lock()
            .expect("lock")
            .client_events
            .push(event.clone());
        match event["type"].as_str() {
            Some("session.update") => {
                let checked = match self.script.validate_session {
                    Some(validate) => validate(&event["session"]),
                    None => Ok(()),
                };
                match checked {
                    Ok(()) => {
                        self.send(json!({"type": "session.updated", "session": event["session"]}))
                    }
                    Err(message) => self.send(json!({"type": "error", "error": {
                        "type": "invalid_request_error", "code": "invalid_value",
                        "message": message, "param": "session",
                        "event_id": event["event_id"]}})),
                }
            }
            Some("response.create") => self.respond(),
            Some("response.cancel") => self.speaking = 0,
            _ => {}
        }
    }

    fn respond(&mut self) {
        self.response += 1;
        let id = format!("resp_{}", self.response);
        self.send(
            json!({"type": "response.created", "response": {"id": id, "status": "in_progress"}}),
        );
        self.speaking = self.script.reply_frames;
        self.next_frame = Some(Instant::now());
    }

    fn finish_response(&mut self) {
        let id = format!("resp_{}", self.response);
        let transcript = self.script.reply_transcript.clone();
        self.send(json!({"type": "response.output_audio_transcript.done",
            "response_id": id, "item_id": format!("item_{}", self.response),
            "output_index": 0, "content_index": 0, "transcript": transcript}));
        self.send(json!({"type": "response.done", "response": {
            "id": id, "status": "completed", "output": [],
            "usage": {"total_tokens": 180, "input_tokens": 120, "output_tokens": 60,
                "input_token_details": {"text_tokens": 100, "audio_tokens": 20, "cached_tokens": 0},
                "output_token_details": {"text_tokens": 15, "audio_tokens": 45}}}}));
    }

    fn speak(&mut self, now: Instant) {
        while self.speaking > 0 && self.next_frame.is_some_and(|at| at <= now) {
            let Some(mid) = self.mid else { return };
            let index = self.script.reply_frames - self.speaking;
            self.speaking -= 1;
            self.seq += 1;
            self.rtp_time = self.rtp_time.wrapping_add(960);
            let mut payload = MODEL_AUDIO_MARKER.to_vec();
            payload.push(index as u8);
            if let Some(stream) = self.rtc.direct_api().stream_tx_by_mid(mid, None) {
                let seq: SeqNo = self.seq.into();
                stream.write_rtp(RtpWrite::new(
                    Pt::new_with_value(111),
                    seq,
                    self.rtp_time,
                    now,
                    payload,
                ));
            }
            {
                let mut observed = self.observed.lock().expect("lock");
                observed.audio_out += 1;
                observed.first_audio_out_at.get_or_insert(now);
            }
            self.next_frame = self.next_frame.map(|at| at + Duration::from_millis(20));
            if self.speaking == 0 {
                self.next_frame = None;
                self.finish_response();
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected => self.observed.lock().expect("lock").connected = true,
            Event::Closed => self.observed.lock().expect("lock").closed = true,
            Event::MediaAdded(added) => self.mid = Some(added.mid),
            Event::ChannelOpen(channel, _label) => {
                self.channel = Some(channel);
                self.observed.lock().expect("lock").channel_open = true;
                self.send(json!({"type": "session.created", "session": {"type": "realtime", "object": "realtime.session"}}));
                for event in std::mem::take(&mut self.outbox) {
                    self.send(event);
                }
            }
            Event::ChannelData(data) if !data.binary => {
                if let Ok(text) = String::from_utf8(data.data) {
                    self.on_client_event(&text);
                }
            }
            Event::RtpPacket(packet) => {
                self.observed
                    .lock()
                    .expect("lock")
                    .audio_in
                    .push((packet.header.timestamp, packet.payload.to_vec()));
                if !self.heard_caller && self.channel.is_some() {
                    self.heard_caller = true;
                    for event in self.script.on_caller_audio.clone() {
                        self.send(event);
                    }
                }
            }
            _ => {}
        }
    }
}

async fn run(mut state: State, socket: UdpSocket, mut commands: mpsc::UnboundedReceiver<Command>) {
    let local = socket.local_addr().expect("local addr");
    let mut buf = vec![0u8; 2048];
    loop {
        let Some(timeout) = drain(&mut state, &socket).await else {
            return;
        };
        let wake = state.next_frame.map_or(timeout, |f| f.min(timeout));
        tokio::select! {
            command = commands.recv() => match command {
                None | Some(Command::Drop) => {
                    let _ = state.rtc.close();
                    let _ = drain(&mut state, &socket).await;
                    state.observed.lock().expect("lock").closed = true;
                    return;
                }
                Some(Command::Event(event)) => state.send(event),
            },
            received = socket.recv_from(&mut buf) => {
                let Ok((n, source)) = received else { continue };
                if let Ok(receive) = Receive::new(Protocol::Udp, source, local, &buf[..n]) {
                    let _ = state.rtc.handle_input(Input::Receive(Instant::now(), receive));
                }
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                let now = Instant::now();
                state.speak(now);
                let _ = state.rtc.handle_input(Input::Timeout(now));
            }
        }
    }
}

/// Drains the peer's output; `None` once it is closed for good.
async fn drain(state: &mut State, socket: &UdpSocket) -> Option<Instant> {
    loop {
        match state.rtc.poll_output() {
            Ok(Output::Timeout(at)) => return state.rtc.is_alive().then_some(at),
            Ok(Output::Transmit(t)) => {
                let _ = socket.send_to(&t.contents, t.destination).await;
            }
            Ok(Output::Event(event)) => state.on_event(event),
            Err(_) => return None,
        }
    }
}
