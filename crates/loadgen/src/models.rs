//! OpenAI's end of a model leg (`--model`): a fake realtime peer that answers at once, run on
//! the peers thread beside the callers ([`crate::peers`]).
//!
//! It is built with `fakes::realtime_peer`'s sans-IO [`model_rtc`] and [`answer`] (OpenAI's
//! answer: audio and the `oai-events` channel, DTLS active), and:
//! - sends `session.created` when the channel opens;
//! - on `response.create` (the bridge's greeting) sends `response.created`, [`GREETING_FRAMES`]
//!   Opus packets at once that start with [`MODEL_AUDIO_MARKER`] (what the caller looks for),
//!   and `response.done` with usage;
//! - echoes every caller packet as soon as it has read it, with its kernel receive time and
//!   the echo's write time in the payload, so the caller can time each of the bridge's two
//!   relays and leave this peer's own time out.

use serde_json::{json, Value};
use str0m::channel::ChannelId;
use str0m::media::{Mid, Pt};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::Event;

use fakes::realtime_peer::{answer, model_rtc, MODEL_AUDIO_MARKER};
use mio::{Registry, Token};

use crate::peers::{layout, realtime_ns, Io};

/// Opus packets in the greeting, sent at once.
const GREETING_FRAMES: u8 = 5;
/// The greeting's packets are as big as the callers' (a 20 ms Opus frame at ~32 kbit/s).
const GREETING_BYTES: usize = 80;

/// What one model peer saw and did.
#[derive(Debug, Default, Clone)]
pub struct ModelReport {
    /// ICE and DTLS came up.
    pub connected: bool,
    /// The event channel opened.
    pub channel_open: bool,
    /// `response.create`s answered.
    pub greetings: u64,
    /// Caller packets echoed.
    pub echoed: u64,
    pub error: Option<String>,
}

pub struct ModelPeer {
    io: Io,
    mid: Option<Mid>,
    channel: Option<ChannelId>,
    seq: u64,
    rtp_time: u32,
    events_sent: u64,
    report: ModelReport,
}

impl ModelPeer {
    /// A peer on a new socket (registered as `token`) and its answer to `offer`.
    pub fn answer(
        registry: &Registry,
        token: Token,
        offer: &str,
    ) -> anyhow::Result<(Self, String)> {
        let mut io = Io::bind(registry, token, model_rtc)?;
        let sdp = answer(&mut io.rtc, offer).map_err(anyhow::Error::msg)?;
        let peer = Self {
            io,
            mid: None,
            channel: None,
            seq: 300,
            rtp_time: 1_000,
            events_sent: 0,
            report: ModelReport::default(),
        };
        Ok((peer, sdp))
    }

    pub fn io_mut(&mut self) -> &mut Io {
        &mut self.io
    }

    pub fn report(&self) -> ModelReport {
        self.report.clone()
    }

    /// The peer's `Rtc` failed.
    pub fn failed(&mut self, error: String) {
        self.report.error.get_or_insert(error);
    }

    /// Acts on the events of one drain; `received_ns` is the kernel time of the datagram that
    /// caused them. True when it wrote something, so the `Rtc` must be drained again.
    // str0m's `Event` is non-exhaustive: the catch-all is required, and the events not named
    // here (ICE state, statistics, channel close) change nothing for this peer.
    #[allow(clippy::wildcard_enum_match_arm)]
    pub fn on_events(&mut self, events: &mut Vec<Event>, received_ns: Option<u64>) -> bool {
        let mut wrote = false;
        for event in events.drain(..) {
            match event {
                Event::Connected => self.report.connected = true,
                Event::MediaAdded(added) => self.mid = Some(added.mid),
                Event::ChannelOpen(channel, _label) => {
                    self.channel = Some(channel);
                    self.report.channel_open = true;
                    self.say(json!({"type": "session.created", "session": {
                        "type": "realtime", "object": "realtime.session"}}));
                    wrote = true;
                }
                Event::ChannelData(data) if !data.binary => {
                    let kind = serde_json::from_slice::<Value>(&data.data)
                        .ok()
                        .and_then(|event| event["type"].as_str().map(str::to_owned));
                    if kind.as_deref() == Some("response.create") {
                        self.greet();
                        wrote = true;
                    }
                }
                Event::RtpPacket(packet) => {
                    self.echo(packet.payload.to_vec(), received_ns);
                    wrote = true;
                }
                _ => {}
            }
        }
        wrote
    }

    /// The greeting: `response.created`, the audio at once, `response.done` with usage.
    fn greet(&mut self) {
        self.report.greetings += 1;
        let id = format!("resp_{}", self.report.greetings);
        self.say(
            json!({"type": "response.created", "response": {"id": id, "status": "in_progress"}}),
        );
        for index in 0..GREETING_FRAMES {
            let mut payload = vec![0u8; GREETING_BYTES];
            payload[..MODEL_AUDIO_MARKER.len()].copy_from_slice(&MODEL_AUDIO_MARKER);
            payload[MODEL_AUDIO_MARKER.len()] = index;
            self.write(payload);
        }
        self.say(json!({"type": "response.done", "response": {
            "id": id, "status": "completed", "output": [],
            "usage": {"total_tokens": 180, "input_tokens": 120, "output_tokens": 60,
                "input_token_details": {"text_tokens": 100, "audio_tokens": 20, "cached_tokens": 0},
                "output_token_details": {"text_tokens": 15, "audio_tokens": 45}}}}));
    }

    /// Sends a caller's packet back, stamped with when this peer received and wrote it.
    fn echo(&mut self, mut payload: Vec<u8>, received_ns: Option<u64>) {
        self.report.echoed += 1;
        if payload.len() >= layout::MODEL_TX.end {
            let received = received_ns.unwrap_or_else(realtime_ns);
            payload[layout::MODEL_RX].copy_from_slice(&received.to_be_bytes());
            payload[layout::MODEL_TX].copy_from_slice(&realtime_ns().to_be_bytes());
        }
        self.write(payload);
    }

    fn write(&mut self, payload: Vec<u8>) {
        let Some(mid) = self.mid else { return };
        self.seq += 1;
        self.rtp_time = self.rtp_time.wrapping_add(960);
        let now = std::time::Instant::now();
        if let Some(stream) = self.io.rtc.direct_api().stream_tx_by_mid(mid, None) {
            let seq: SeqNo = self.seq.into();
            stream.write_rtp(RtpWrite::new(
                Pt::new_with_value(111),
                seq,
                self.rtp_time,
                now,
                payload,
            ));
        }
    }

    /// Sends a server event on the channel.
    fn say(&mut self, mut event: Value) {
        self.events_sent += 1;
        event["event_id"] = json!(format!("event_{}", self.events_sent));
        if let Some(mut channel) = self.channel.and_then(|id| self.io.rtc.channel(id)) {
            let _ = channel.write(false, event.to_string().as_bytes());
        }
    }
}
