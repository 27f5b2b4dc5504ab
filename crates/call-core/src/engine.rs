//! The media engine: every call's WebRTC leg on one UDP socket, driven from outside.
//!
//! # Contract
//!
//! Like the str0m `Rtc` it wraps, the engine does no I/O and reads no clock. The shell:
//!
//! 1. calls one mutation (`accept_offer`, `create_offer`, `accept_answer`, `start_media`,
//!    `hang_up`, `handle_receive`, `handle_timeout`) with the current time;
//! 2. drains [`Engine::poll_output`] until it returns [`Output::Timeout`], sending every
//!    [`Output::Transmit`] on the socket and acting on every [`Output::Event`];
//! 3. waits for a datagram or the timeout, and goes back to 1.
//!
//! Inside, every mutation of a leg's `Rtc` is followed by draining that `Rtc` to its timeout
//! (str0m's single-mutation invariant), so the shell never sees str0m at all.
//!
//! # Demultiplexing
//!
//! All legs share one socket. An incoming datagram is matched to its leg by the remote address
//! (learned from every datagram a leg sends), then, for STUN, by our ICE ufrag in the USERNAME
//! (we choose each leg's ufrag), and only then by asking each leg (`Rtc::accepts`).
//!
//! # Model legs
//!
//! A call answered by the realtime model ([`AgentKind::Model`]) has a second leg, to the
//! model's WebRTC endpoint, on the same socket: we offer it ([`Engine::offer_model_leg`]: audio
//! and the `oai-events` data channel), the shell exchanges the SDP over HTTP and hands back the
//! answer ([`Engine::accept_model_answer`]). Opus is relayed between the legs as it comes, with
//! each leg's own sequence numbers, timestamps and SSRC; DTMF stays on the user's leg. The shell
//! never sees the model leg's handle: its events come as the call's (`CallEvent::Model*`), and
//! losing it does not end the call (the shell decides: re-establish or hang up).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::{Codec, FormatParams};
use str0m::ice::{IceCreds, StunMessage};
use str0m::media::{Direction, Frequency, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output as RtcOutput, Rtc, RtcConfig};

use crate::agent::{Agent, AgentKind, AgentPacket};
use crate::dtmf::DtmfDetector;
use crate::lifecycle::EndReason;
use crate::quality::ReceiveQuality;
use crate::rtcp;
use crate::sdp;
use crate::srtp::{self, Received, SrtcpStream, SrtpReceiver, SrtpStream};

/// WhatsApp's Opus payload type, and the one we offer.
pub const OPUS_PT: u8 = 111;
/// WhatsApp's telephone-event payload type.
pub const TELEPHONE_EVENT_PT: u8 = 126;
/// The data channel OpenAI's realtime endpoint carries its JSON events on.
pub const MODEL_CHANNEL: &str = "oai-events";

/// An engine's call: a small handle the shell maps to its own call id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallHandle(pub u64);

/// How the engine runs calls.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The address the UDP socket is bound to (a concrete IP, not a wildcard): the host
    /// candidate, and the `destination` of every datagram received.
    pub host: SocketAddr,
    /// The public address the socket is reachable at, when it differs (NAT 1:1, found with
    /// STUN or configured): advertised as a server-reflexive candidate.
    pub public: Option<SocketAddr>,
    /// A call whose media has not connected (ICE + DTLS) this long after it started ends.
    pub connect_timeout: Duration,
    /// A connected call that has received no media this long ends.
    pub media_timeout: Duration,
    /// No call lasts longer (OpenAI sessions end at 60 minutes).
    pub max_call_length: Duration,
    /// An outbound call nobody answers ends after this long.
    pub ring_timeout: Duration,
    /// Decrypt incoming audio ourselves, with the keys str0m derived ([`crate::srtp`]),
    /// instead of through str0m's receive path: less work per packet. str0m then sees no
    /// incoming RTP on such a leg: the engine keeps the stream's quality itself
    /// ([`CallEvent::Quality`]) and puts it in str0m's receiver reports ([`crate::rtcp`]).
    /// Off in [`EngineConfig::new`]; the service turns it on (`RTC_FAST_RECEIVE`).
    pub fast_receive: bool,
    /// Encrypt outgoing audio ourselves, with the keys str0m derived, and send it without
    /// str0m's send path (write, pacer, poll). str0m then sends no RTP on such a leg: the
    /// engine adds what it sent to str0m's sender reports. Off in [`EngineConfig::new`]; the
    /// service turns it on (`RTC_FAST_SEND`).
    pub fast_send: bool,
}

impl EngineConfig {
    /// Whether legs need their SRTP keys taken from str0m (either fast path is on).
    fn takes_keys(&self) -> bool {
        self.fast_receive || self.fast_send
    }

    /// Defaults for a host address.
    pub fn new(host: SocketAddr) -> Self {
        Self {
            host,
            public: None,
            connect_timeout: Duration::from_secs(20),
            media_timeout: Duration::from_secs(20),
            max_call_length: Duration::from_secs(60 * 60),
            ring_timeout: Duration::from_secs(60),
            fast_receive: false,
            fast_send: false,
        }
    }
}

/// Why the engine could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The offer or answer is not SDP str0m can use (the message says what).
    #[error("unusable SDP: {0}")]
    BadSdp(String),
    /// The SDP has no audio we can receive and send (Opus).
    #[error("the SDP offers no Opus audio")]
    NoAudio,
    /// No call has this handle (it ended).
    #[error("no such call")]
    NoSuchCall,
    /// The call is not in a state for this (an answer to a call we did not offer).
    #[error("the call is not waiting for this: {0}")]
    WrongState(&'static str),
    /// The model's data channel has no room for the message now (it is sending a backlog).
    #[error("the model's data channel is full")]
    ChannelFull,
    /// str0m refused (a bug, or a peer doing something unexpected).
    #[error("WebRTC error: {0}")]
    Rtc(#[from] str0m::RtcError),
}

/// What the engine tells the shell.
#[derive(Debug, PartialEq)]
pub enum Output {
    /// Send `contents` to `destination` from the engine's socket.
    Transmit {
        /// Where.
        destination: SocketAddr,
        /// The datagram.
        contents: Vec<u8>,
    },
    /// Something happened to a call.
    Event(CallHandle, CallEvent),
    /// Nothing more until this time (or a new input).
    Timeout(Instant),
}

/// Something that happened to a call.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    /// ICE and DTLS are up: media can flow.
    Connected,
    /// The first audio packet from the user arrived.
    MediaStarted,
    /// The user pressed a key.
    Dtmf(char),
    /// The call is over; the handle is gone.
    Ended {
        /// Why.
        reason: EndReason,
        /// What the call's media looked like.
        stats: CallStats,
    },
    /// Periodic receive quality (from RTCP), for metrics.
    Quality {
        /// Fraction of packets lost in the last report interval (0.0–1.0).
        loss: Option<f32>,
        /// Interarrival jitter, seconds.
        jitter: f64,
    },
    /// The model leg's ICE and DTLS are up: caller audio flows to the model.
    ModelConnected,
    /// The model's event channel is open: messages can be sent.
    ModelChannelOpen,
    /// A text message from the model's event channel (JSON events, unparsed).
    ModelMessage(String),
    /// The first audio packet from the model arrived.
    ModelAudioStarted,
    /// The model leg is gone (closed by the model, failed, timed out, or dropped by us); the
    /// call goes on without it.
    ModelEnded {
        /// Why.
        reason: EndReason,
    },
}

/// Packet counts for one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Audio packets received from the user.
    pub packets_in: u64,
    /// Audio bytes (payload) received from the user.
    pub bytes_in: u64,
    /// Audio packets sent to the user.
    pub packets_out: u64,
    /// Audio bytes (payload) sent to the user.
    pub bytes_out: u64,
    /// Key presses.
    pub dtmf: u64,
    /// Of the packets received (audio, key presses and the model's audio), how many took the
    /// fast receive path ([`EngineConfig::fast_receive`]).
    pub packets_in_fast: u64,
    /// Of the packets sent, how many the fast send path encrypted and sent
    /// ([`EngineConfig::fast_send`]).
    pub packets_out_fast: u64,
}

/// What a leg is to its call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The user's leg (WhatsApp, a browser): its handle is the call's.
    User {
        /// The call's model leg, while it has one.
        model: Option<CallHandle>,
    },
    /// The model leg of the call `user`.
    Model { user: CallHandle },
}

/// One leg: a user's WebRTC leg and the agent answering it, or a call's model leg (whose agent
/// is unused: its audio is the user leg's agent's business).
struct Call {
    role: Role,
    rtc: Rtc,
    ufrag: String,
    /// The audio m-line, once known.
    mid: Option<Mid>,
    /// The payload types negotiated for Opus and telephone-event (the offerer's: WhatsApp
    /// uses 111 and 126, browsers and other stacks often 96–127 otherwise).
    opus_pt: Pt,
    tele_pt: Option<Pt>,
    /// Our offer, until the answer arrives (outbound calls).
    pending_offer: Option<SdpPendingOffer>,
    agent: Agent,
    /// The agent speaks only once the call is answered (`start_media`).
    media_started: bool,
    started_at: Instant,
    /// When both SDPs were known (inbound: at once; outbound: when the answer came).
    negotiated_at: Option<Instant>,
    connected_at: Option<Instant>,
    last_media: Option<Instant>,
    rtc_timeout: Instant,
    out_seq: u64,
    out_time_base: u32,
    dtmf: DtmfDetector,
    stats: CallStats,
    ending: Option<EndReason>,
    /// The time of this call's live entry in the engine's wake-up heap.
    scheduled: Option<Instant>,
    /// Model legs: the event channel, once open.
    channel: Option<ChannelId>,
    /// Model legs: when ICE lost consent (the model sends no steady audio to time out on).
    ice_lost_at: Option<Instant>,
    /// The fast receive path, once DTLS has given the leg its keys (`fast_receive`).
    fast_rx: Option<SrtpReceiver>,
    /// What the fast receive path has received, for the quality reports str0m cannot make.
    fast_quality: Option<ReceiveQuality>,
    /// The fast send path, once DTLS has given the leg its keys (`fast_send`) and the leg
    /// knows its audio stream.
    fast_tx: Option<FastSender>,
    /// The send keys, until the fast send path is set up with them.
    fast_tx_keys: Option<srtp::SrtpMaster>,
    /// The fast paths' corrections to str0m's reports, once DTLS has given the leg its keys.
    fast_reports: Option<FastReports>,
    /// Whether DTLS has given this leg its keys yet (they are taken once).
    keys_taken: bool,
    /// Where str0m last sent this leg's datagrams: the nominated ICE pair's remote end.
    remote: Option<SocketAddr>,
}

/// What the fast send path needs: the leg's send keys and its audio stream's SSRC; and what
/// it has sent, for the sender reports (the packets are the leg's `packets_out_fast`).
struct FastSender {
    stream: SrtpStream,
    ssrc: u32,
    /// Payload octets sent (RFC 3550 keeps the count modulo 2^32).
    octets: u32,
    /// The RTP time of the last packet sent, and when it went.
    last: Option<(u32, Instant)>,
    /// The header extensions str0m would have written.
    extensions: Option<HeaderExtensions>,
    /// Scratch space for a packet's header.
    header: Vec<u8>,
}

impl FastSender {
    /// The sender for the audio stream `mid` of `rtc`; `None` (str0m sends) when the stream is
    /// not there.
    fn new(rtc: &mut Rtc, mid: Mid, keys: &srtp::SrtpMaster, now: Instant) -> Option<Self> {
        let extensions = rtc
            .media(mid)
            .and_then(|media| HeaderExtensions::new(media.remote_extmap(), mid, now));
        let mut api = rtc.direct_api();
        let ssrc = *api.stream_tx_by_mid(mid, None)?.ssrc();
        Some(Self {
            stream: SrtpStream::new(keys, true),
            ssrc,
            octets: 0,
            last: None,
            extensions,
            header: Vec::with_capacity(32),
        })
    }

    /// Encrypts one packet of `payload` into `out`: a plain header (see [`rtp_header`]) with
    /// the negotiated extensions, the leg's sequence number `seq` and the RTP time.
    fn seal(
        &mut self,
        now: Instant,
        pt: u8,
        seq: u64,
        rtp_time: u32,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        self.header.clear();
        self.header
            .extend_from_slice(&rtp_header(pt, seq, rtp_time, self.ssrc));
        if let Some(extensions) = self.extensions.as_mut() {
            self.header[0] |= 0x10;
            self.header.extend_from_slice(extensions.stamped(now));
        }
        let roc = u32::try_from(seq >> 16).unwrap_or(u32::MAX);
        let sealed = self
            .stream
            .protect_parts(roc, &self.header, payload, out)
            .is_ok();
        if sealed {
            self.octets = self.octets.wrapping_add(payload.len() as u32);
            self.last = Some((rtp_time, now));
        }
        sealed
    }

    /// What a sender report sent now should say about the stream, `packets` of which went
    /// out this way.
    fn sent(&self, now: Instant, packets: u64) -> rtcp::Sent {
        rtcp::Sent {
            ssrc: self.ssrc,
            // Modulo 2^32, as RFC 3550 counts.
            packets: packets as u32,
            octets: self.octets,
            // The audio's clock ran on since the last packet.
            rtp_time: self.last.map(|(rtp_time, at)| {
                let since = now.saturating_duration_since(at).as_secs_f64();
                rtp_time.wrapping_add((since * f64::from(OPUS_CLOCK_RATE)) as u32)
            }),
        }
    }
}

/// The header extensions str0m writes on the audio it sends, when the answer negotiated them
/// (`sdp`: mid and abs-send-time; WhatsApp's captured offers negotiate none), so the fast send
/// path's packets say what str0m's would. RFC 8285's one-byte form, or the two-byte form when
/// an id or the mid needs it. (str0m stops sending the mid once the peer has reported on the
/// stream; sending it on, as older libwebrtc did, is allowed and costs two bytes.)
struct HeaderExtensions {
    /// The extension block: profile and length words, then the elements, padded to 32 bits.
    block: Vec<u8>,
    /// Where abs-send-time's three bytes are in `block`.
    abs_send_time_at: Option<usize>,
    /// abs-send-time counts from here: receivers use only its differences.
    epoch: Instant,
}

impl HeaderExtensions {
    fn new(map: &str0m::rtp::ExtensionMap, mid: Mid, now: Instant) -> Option<Self> {
        let mut elements: Vec<(u8, &[u8])> = Vec::new();
        if let Some(id) = map.id_of(Extension::RtpMid) {
            elements.push((id, mid.as_bytes()));
        }
        let abs_send_time_id = map.id_of(Extension::AbsoluteSendTime);
        if let Some(id) = abs_send_time_id {
            elements.push((id, &[0; 3]));
        }
        if elements.is_empty() {
            return None;
        }
        let one_byte = elements
            .iter()
            .all(|(id, data)| (1..=14).contains(id) && (1..=16).contains(&data.len()));
        let mut block: Vec<u8> = if one_byte {
            vec![0xbe, 0xde, 0, 0]
        } else {
            vec![0x10, 0x00, 0, 0]
        };
        let mut abs_send_time_at = None;
        for (id, data) in elements {
            let len = u8::try_from(data.len()).ok()?;
            if one_byte {
                block.push((id << 4) | (len - 1));
            } else {
                block.extend_from_slice(&[id, len]);
            }
            if Some(id) == abs_send_time_id {
                abs_send_time_at = Some(block.len());
            }
            block.extend_from_slice(data);
        }
        while block.len() % 4 != 0 {
            block.push(0);
        }
        let words = u16::try_from(block.len() / 4 - 1).ok()?;
        block[2..4].copy_from_slice(&words.to_be_bytes());
        Some(Self {
            block,
            abs_send_time_at,
            epoch: now,
        })
    }

    /// The block, with abs-send-time set to `now`: seconds in 6.18 fixed point, modulo 64 s.
    fn stamped(&mut self, now: Instant) -> &[u8] {
        if let Some(at) = self.abs_send_time_at {
            let since = now.saturating_duration_since(self.epoch).as_secs_f64();
            let fixed = ((since * f64::from(1u32 << 18)) as u64 & 0xff_ffff) as u32;
            self.block[at..at + 3].copy_from_slice(&fixed.to_be_bytes()[1..]);
        }
        &self.block
    }
}

/// A leg's reports on the fast paths: str0m's opened, corrected ([`rtcp::correct`]) and sealed
/// again under their own SRTCP index; the peer's read for the time of its sender reports,
/// which our reception report block echoes so the peer can work out the round trip.
struct FastReports {
    open_ours: SrtcpStream,
    seal_ours: SrtcpStream,
    open_theirs: SrtcpStream,
    plain: Vec<u8>,
}

impl FastReports {
    fn new(keys: &srtp::LegKeys) -> Self {
        Self {
            open_ours: SrtcpStream::new(&keys.send, false),
            seal_ours: SrtcpStream::new(&keys.send, true),
            open_theirs: SrtcpStream::new(&keys.receive, false),
            plain: Vec::with_capacity(256),
        }
    }
}

/// The engine.
pub struct Engine {
    config: EngineConfig,
    /// Boxed: a `Call` is a few KB (str0m's `Rtc` is inline) and the map keeps spare slots.
    calls: HashMap<CallHandle, Box<Call>>,
    /// How many of `calls` are model legs.
    model_legs: usize,
    by_remote: HashMap<SocketAddr, CallHandle>,
    by_ufrag: HashMap<String, CallHandle>,
    next_handle: u64,
    outputs: VecDeque<Output>,
    /// Scratch space for agent packets, reused.
    agent_out: Vec<AgentPacket>,
    /// Counts of every call so far (live ones included), for [`Engine::totals`].
    totals: CallStats,
    /// One DTLS certificate for every leg: generating a key pair per call costs setup time
    /// and memory, and peers only need the fingerprint in our SDP to match.
    dtls_cert: Option<str0m::config::DtlsCert>,
    /// When calls next need attention, earliest first. A call has at most one live entry
    /// (`Call::scheduled`); a call whose next time moves earlier gets a new entry and its old
    /// one is skipped when it comes up, so hundreds of calls cost a heap operation, not a
    /// scan, per wake-up.
    wakeups: BinaryHeap<Reverse<(Instant, CallHandle)>>,
    now: Instant,
}

impl Engine {
    /// An engine with no calls.
    pub fn new(config: EngineConfig, now: Instant) -> Self {
        Self {
            config,
            calls: HashMap::new(),
            model_legs: 0,
            by_remote: HashMap::new(),
            by_ufrag: HashMap::new(),
            next_handle: 1,
            outputs: VecDeque::new(),
            agent_out: Vec::new(),
            totals: CallStats::default(),
            dtls_cert: str0m::crypto::from_feature_flags()
                .dtls_provider
                .generate_certificate(),
            wakeups: BinaryHeap::new(),
            now,
        }
    }

    /// Calls held now.
    pub fn active_calls(&self) -> usize {
        self.calls.len() - self.model_legs
    }

    /// Whether the call exists.
    pub fn has_call(&self, call: CallHandle) -> bool {
        self.calls
            .get(&call)
            .is_some_and(|c| matches!(c.role, Role::User { .. }))
    }

    /// Packet and byte counts of every call so far, ended ones included (monotonic).
    pub fn totals(&self) -> CallStats {
        self.totals
    }

    /// Ends every call (shutdown).
    pub fn hang_up_all(&mut self, now: Instant, reason: EndReason) {
        self.now = now;
        let handles: Vec<CallHandle> = self
            .calls
            .iter()
            .filter(|(_, c)| matches!(c.role, Role::User { .. }))
            .map(|(h, _)| *h)
            .collect();
        for call in handles {
            self.end(call, reason);
        }
    }

    // --- signalling ---------------------------------------------------------------------------

    /// Answers a WhatsApp offer (an inbound call): returns the call and the SDP answer to send
    /// with `pre_accept`/`accept`. The answer takes the active DTLS role and carries every
    /// candidate (non-trickle). The agent stays quiet until [`Engine::start_media`].
    ///
    /// # Errors
    /// [`CallError::BadSdp`]/[`CallError::NoAudio`] for an offer we cannot use; nothing is
    /// kept then.
    pub fn accept_offer(
        &mut self,
        now: Instant,
        offer: &str,
        agent: AgentKind,
    ) -> Result<(CallHandle, String), CallError> {
        self.answer(now, &sdp::prepare_whatsapp_offer(offer), agent)
    }

    /// Answers a browser's offer (the test phone): the same leg as a WhatsApp call's, on the
    /// same socket, but the offer is a standard full-ICE one, so we are the controlled ICE
    /// agent and the DTLS server (`actpass` answered `passive`), and the browser's codec
    /// payload types are used (Firefox offers Opus as 109). The agent starts with
    /// [`Engine::start_media`], as for WhatsApp.
    ///
    /// # Errors
    /// As [`Engine::accept_offer`].
    pub fn accept_browser_offer(
        &mut self,
        now: Instant,
        offer: &str,
        agent: AgentKind,
    ) -> Result<(CallHandle, String), CallError> {
        self.answer(now, &sdp::prepare_browser_offer(offer), agent)
    }

    fn answer(
        &mut self,
        now: Instant,
        prepared: &str,
        agent: AgentKind,
    ) -> Result<(CallHandle, String), CallError> {
        self.now = now;
        if !prepared.lines().any(|l| l.starts_with("m=audio")) {
            return Err(CallError::NoAudio);
        }
        let parsed =
            SdpOffer::from_sdp_string(prepared).map_err(|e| CallError::BadSdp(e.to_string()))?;
        let (handle, mut call) = self.new_call(now, agent, Role::User { model: None });
        let answer = call
            .rtc
            .sdp_api()
            .accept_offer(parsed)
            .map_err(|e| CallError::BadSdp(e.to_string()))?;
        let answer = answer.to_sdp_string();
        if !answer.contains("opus/48000") {
            return Err(CallError::NoAudio);
        }
        call.learn_payload_types();
        // State the offer's Opus limits back; str0m keeps only the parameters it models.
        let extra: Vec<(&str, String)> = [
            "maxaveragebitrate",
            "maxplaybackrate",
            "sprop-maxcapturerate",
        ]
        .into_iter()
        .filter_map(|key| sdp::fmtp_param(prepared, *call.opus_pt, key).map(|v| (key, v)))
        .collect();
        let answer = sdp::add_opus_params(&answer, *call.opus_pt, &extra);
        self.insert(handle, call);
        Ok((handle, answer))
    }

    /// Creates an offer for an outbound call (business-initiated): the SDP to send with the
    /// Graph `connect` action. The callee's answer comes back in a webhook:
    /// [`Engine::accept_answer`].
    ///
    /// # Errors
    /// Only if str0m cannot produce an offer (a bug).
    pub fn create_offer(
        &mut self,
        now: Instant,
        agent: AgentKind,
    ) -> Result<(CallHandle, String), CallError> {
        self.now = now;
        let (handle, mut call) = self.new_call(now, agent, Role::User { model: None });
        call.negotiated_at = None;
        let mut change = call.rtc.sdp_api();
        let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let (offer, pending) = change
            .apply()
            .ok_or(CallError::WrongState("nothing to offer"))?;
        call.mid = Some(mid);
        call.pending_offer = Some(pending);
        let offer = offer.to_sdp_string();
        self.insert(handle, call);
        Ok((handle, offer))
    }

    /// Applies the callee's answer to our offer.
    ///
    /// # Errors
    /// [`CallError::BadSdp`] for an answer that does not fit the offer, [`CallError::WrongState`]
    /// when the call is not waiting for an answer; the call continues (the shell decides to
    /// end it).
    pub fn accept_answer(
        &mut self,
        now: Instant,
        call: CallHandle,
        answer: &str,
    ) -> Result<(), CallError> {
        self.now = now;
        if !self.has_call(call) {
            return Err(CallError::NoSuchCall);
        }
        self.apply_answer(now, call, answer)
    }

    fn apply_answer(
        &mut self,
        now: Instant,
        call: CallHandle,
        answer: &str,
    ) -> Result<(), CallError> {
        let entry = self.calls.get_mut(&call).ok_or(CallError::NoSuchCall)?;
        let pending = entry
            .pending_offer
            .take()
            .ok_or(CallError::WrongState("no offer is waiting for an answer"))?;
        let parsed = SdpAnswer::from_sdp_string(&sdp::normalise(answer))
            .map_err(|e| CallError::BadSdp(e.to_string()))?;
        let result = entry.rtc.sdp_api().accept_answer(pending, parsed);
        entry.negotiated_at = Some(now);
        entry.learn_payload_types();
        self.drain(call);
        result.map_err(|e| CallError::BadSdp(e.to_string()))
    }

    /// The call was answered (inbound: `accept` succeeded; outbound: the callee picked up):
    /// the agent starts, with any audio heard before.
    pub fn start_media(&mut self, now: Instant, call: CallHandle) -> Result<(), CallError> {
        self.now = now;
        let entry = self.calls.get_mut(&call).ok_or(CallError::NoSuchCall)?;
        if !entry.media_started {
            entry.media_started = true;
            entry.agent.start(now);
        }
        self.pump_agent(call, now);
        self.reschedule(call);
        Ok(())
    }

    // --- the model leg -------------------------------------------------------------------------

    /// Offers the call a model leg: the SDP offer (audio and the [`MODEL_CHANNEL`] data
    /// channel, every candidate) to send to the model's WebRTC endpoint. The call's audio,
    /// kept since it started, flows to the model once the leg connects.
    ///
    /// # Errors
    /// [`CallError::NoSuchCall`]; [`CallError::WrongState`] when the call has a model leg
    /// already, or its agent is not [`AgentKind::Model`].
    pub fn offer_model_leg(&mut self, now: Instant, call: CallHandle) -> Result<String, CallError> {
        self.now = now;
        let user = self.calls.get(&call).ok_or(CallError::NoSuchCall)?;
        match user.role {
            Role::User { model: None } if matches!(user.agent, Agent::Relay { .. }) => {}
            Role::User { model: None } => {
                return Err(CallError::WrongState("the call's agent is not the model"))
            }
            Role::User { model: Some(_) } => {
                return Err(CallError::WrongState("the call has a model leg"))
            }
            Role::Model { .. } => return Err(CallError::NoSuchCall),
        }
        let (handle, mut leg) = self.new_call(now, AgentKind::Model, Role::Model { user: call });
        let mut change = leg.rtc.sdp_api();
        let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        change.add_channel(MODEL_CHANNEL.to_owned());
        let (offer, pending) = change
            .apply()
            .ok_or(CallError::WrongState("nothing to offer"))?;
        leg.mid = Some(mid);
        leg.pending_offer = Some(pending);
        leg.negotiated_at = None;
        let offer = offer.to_sdp_string();
        if let Some(user) = self.calls.get_mut(&call) {
            user.role = Role::User {
                model: Some(handle),
            };
        }
        self.model_legs += 1;
        self.insert(handle, leg);
        Ok(offer)
    }

    /// Applies the model endpoint's answer to the call's model leg offer.
    ///
    /// # Errors
    /// As [`Engine::accept_answer`]; the model leg stays until the shell drops it.
    pub fn accept_model_answer(
        &mut self,
        now: Instant,
        call: CallHandle,
        answer: &str,
    ) -> Result<(), CallError> {
        self.now = now;
        let model = self.model_of(call)?;
        self.apply_answer(now, model, answer)
    }

    /// Sends a text message (a JSON event) on the model's event channel.
    ///
    /// # Errors
    /// [`CallError::WrongState`] before [`CallEvent::ModelChannelOpen`];
    /// [`CallError::ChannelFull`] when the channel's buffer has no room.
    pub fn send_model_message(
        &mut self,
        now: Instant,
        call: CallHandle,
        text: &str,
    ) -> Result<(), CallError> {
        self.now = now;
        let model = self.model_of(call)?;
        let leg = self.calls.get_mut(&model).ok_or(CallError::NoSuchCall)?;
        let channel = leg.channel.ok_or(CallError::WrongState(
            "the model's event channel is not open",
        ))?;
        let mut channel = leg.rtc.channel(channel).ok_or(CallError::WrongState(
            "the model's event channel is not open",
        ))?;
        let written = channel.write(false, text.as_bytes())?;
        self.drain(model);
        if written {
            Ok(())
        } else {
            Err(CallError::ChannelFull)
        }
    }

    /// Drops the call's model leg (to replace it, or because the shell gave up on it). A
    /// [`CallEvent::ModelEnded`] follows; the call goes on.
    pub fn drop_model_leg(&mut self, now: Instant, call: CallHandle, reason: EndReason) {
        self.now = now;
        if let Ok(model) = self.model_of(call) {
            self.end(model, reason);
        }
    }

    fn model_of(&self, call: CallHandle) -> Result<CallHandle, CallError> {
        match self.calls.get(&call).map(|c| c.role) {
            Some(Role::User { model: Some(model) }) => Ok(model),
            Some(Role::User { model: None }) => {
                Err(CallError::WrongState("the call has no model leg"))
            }
            Some(Role::Model { .. }) | None => Err(CallError::NoSuchCall),
        }
    }

    /// Ends a call from our side (hang-up, shutdown, capacity). The user's side gets DTLS
    /// close; WhatsApp's side is told by the shell (Graph `terminate`).
    pub fn hang_up(&mut self, now: Instant, call: CallHandle, reason: EndReason) {
        self.now = now;
        self.end(call, reason);
    }

    // --- network and time ---------------------------------------------------------------------

    /// Feeds a datagram received on the socket. Returns whether a call took it.
    pub fn handle_receive(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) -> bool {
        self.now = now;
        if self.receive_fast(now, source, contents) {
            return true;
        }
        self.read_peer_report(now, source, contents);
        let Ok(receive) = Receive::new(Protocol::Udp, source, self.config.host, contents) else {
            return false;
        };
        let input = Input::Receive(now, receive);
        let Some(call) = self.owner(source, contents, &input) else {
            return false;
        };
        let Some(entry) = self.calls.get_mut(&call) else {
            return false;
        };
        if let Err(err) = entry.rtc.handle_input(input) {
            tracing::debug!(call = call.0, error = %err, "datagram refused by the call's WebRTC stack");
        }
        self.drain(call);
        // An agent with no delay answers the packet now, not at the next wake-up; relayed
        // audio goes on at once.
        self.pump(call, now);
        true
    }

    /// Advances time: str0m's timers, the agents, and the call timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        while let Some(&Reverse((at, call))) = self.wakeups.peek() {
            if at > now {
                break;
            }
            self.wakeups.pop();
            let Some(entry) = self.calls.get_mut(&call) else {
                continue;
            };
            if entry.scheduled != Some(at) {
                continue; // superseded by an earlier entry
            }
            entry.scheduled = None;
            if entry.rtc_timeout <= now {
                if let Err(err) = entry.rtc.handle_input(Input::Timeout(now)) {
                    tracing::debug!(call = call.0, error = %err, "timeout refused by the call's WebRTC stack");
                }
                self.drain(call);
            }
            self.pump(call, now);
            self.check_timers(call, now);
            self.reschedule(call);
        }
    }

    /// The next thing for the shell to do.
    pub fn poll_output(&mut self) -> Output {
        if let Some(output) = self.outputs.pop_front() {
            return output;
        }
        // Drop superseded entries so the top is a real wake-up.
        while let Some(&Reverse((at, call))) = self.wakeups.peek() {
            if self
                .calls
                .get(&call)
                .is_some_and(|c| c.scheduled == Some(at))
            {
                return Output::Timeout(at.max(self.now));
            }
            self.wakeups.pop();
        }
        Output::Timeout(self.now + Duration::from_secs(3600))
    }

    // --- inside -------------------------------------------------------------------------------

    fn new_call(&mut self, now: Instant, agent: AgentKind, role: Role) -> (CallHandle, Call) {
        let handle = CallHandle(self.next_handle);
        self.next_handle += 1;
        // Our own ufrag, unique per engine, so incoming STUN finds its call by name.
        let ufrag = format!("wb{:x}{}", handle.0, random_token(6));
        let creds = IceCreds {
            ufrag: ufrag.clone(),
            pass: random_token(24),
        };
        let mut config = RtcConfig::new()
            .clear_codecs()
            .set_rtp_mode(true)
            .set_local_ice_credentials(creds)
            .set_stats_interval(Some(Duration::from_secs(5)))
            // Audio header extensions only, and not transport-wide-cc: with it negotiated, str0m
            // keeps a record of the last 1000 packets we sent (~90 KB per call) for a bandwidth
            // estimator we do not run, whether or not the peer ever sends feedback. WhatsApp's
            // captured offers carry audio-level at most; an offer that has TWCC gets an answer
            // without it, which RFC 8285 allows, and the call falls back to RTCP receiver reports.
            .clear_extension_map()
            .set_extension(1, Extension::AudioLevel)
            .set_extension(2, Extension::AbsoluteSendTime)
            .set_extension(4, Extension::RtpMid)
            // In RTP mode every write is one packet, polled before the next: a few slots suffice
            // (the default, 50, costs ~4 KB per stream for resends audio never gets).
            .set_send_buffer_audio(8);
        if let Some(cert) = &self.dtls_cert {
            config = config.set_dtls_cert(cert.clone());
        }
        config = config.set_crypto_provider(if self.config.takes_keys() {
            srtp::tapping_provider()
        } else {
            crate::crypto::provider()
        });
        let codecs = config.codec_config();
        codecs.add_config(
            Pt::new_with_value(OPUS_PT),
            None,
            Codec::Opus,
            Frequency::FORTY_EIGHT_KHZ,
            Some(2),
            FormatParams {
                min_p_time: Some(20),
                use_inband_fec: Some(true),
                ..FormatParams::default()
            },
        );
        codecs.add_config(
            Pt::new_with_value(TELEPHONE_EVENT_PT),
            None,
            Codec::Tele,
            Frequency::EIGHT_KHZ,
            None,
            FormatParams::default(),
        );
        let mut rtc = config.build(now);
        if let Ok(host) = Candidate::host(self.config.host, "udp") {
            rtc.add_local_candidate(host);
        }
        if let Some(public) = self.config.public.filter(|p| *p != self.config.host) {
            if let Ok(srflx) = Candidate::server_reflexive(public, self.config.host, "udp") {
                rtc.add_local_candidate(srflx);
            }
        }
        let call = Call {
            role,
            rtc,
            ufrag,
            mid: None,
            opus_pt: Pt::new_with_value(OPUS_PT),
            tele_pt: Some(Pt::new_with_value(TELEPHONE_EVENT_PT)),
            pending_offer: None,
            agent: Agent::new(agent),
            media_started: false,
            started_at: now,
            negotiated_at: Some(now),
            connected_at: None,
            last_media: None,
            rtc_timeout: now,
            out_seq: u64::from(random_u16()),
            out_time_base: random_u32(),
            dtmf: DtmfDetector::default(),
            stats: CallStats::default(),
            ending: None,
            scheduled: None,
            channel: None,
            ice_lost_at: None,
            fast_rx: None,
            fast_quality: None,
            fast_tx: None,
            fast_tx_keys: None,
            fast_reports: None,
            keys_taken: false,
            remote: None,
        };
        (handle, call)
    }

    fn insert(&mut self, handle: CallHandle, call: Call) {
        self.by_ufrag.insert(call.ufrag.clone(), handle);
        self.calls.insert(handle, Box::new(call));
        self.drain(handle);
    }

    /// The call a datagram belongs to. A source found the slow way (STUN username, or asking
    /// every call) is remembered, so the call's later datagrams take the first lookup.
    fn owner(&mut self, source: SocketAddr, contents: &[u8], input: &Input) -> Option<CallHandle> {
        if let Some(call) = self.by_remote.get(&source) {
            if self.calls.get(call).is_some_and(|c| c.rtc.accepts(input)) {
                return Some(*call);
            }
        }
        let by_username = StunMessage::parse(contents).ok().and_then(|stun| {
            let (local, _remote) = stun.split_username()?;
            self.by_ufrag.get(local).copied()
        });
        let call = by_username.or_else(|| {
            self.calls
                .iter()
                .find(|(_, c)| c.rtc.accepts(input))
                .map(|(handle, _)| *handle)
        })?;
        self.by_remote.insert(source, call);
        Some(call)
    }

    /// Drains a call's `Rtc` to its timeout, handling its events.
    fn drain(&mut self, handle: CallHandle) {
        // str0m asks for a timeout "now" to release media just written (its pacer works on a
        // snapshot taken at timeouts). Feeding it at once, instead of waiting for the shell's
        // timer (1 ms granularity), takes a millisecond or more off every relayed packet.
        let mut immediate = 4;
        loop {
            let Some(call) = self.calls.get_mut(&handle) else {
                return;
            };
            let output = call.rtc.poll_output();
            // The leg's SRTP keys are set up inside the poll that ends its DTLS handshake.
            if self.config.takes_keys() && !call.keys_taken {
                if let Some(keys) = srtp::take_leg_keys() {
                    // Once per leg: which profile the peer's DTLS picked is worth knowing on a
                    // real number (AES-GCM and AES-CM differ in cost, docs/performance.md).
                    tracing::info!(call = handle.0, srtp = ?keys.receive.profile, "call media encrypted");
                    call.take_keys(self.now, &keys, &self.config);
                }
            }
            let output = match output {
                Ok(output) => output,
                Err(err) => {
                    tracing::warn!(call = handle.0, error = %err, "call's WebRTC stack failed");
                    self.end(handle, EndReason::Failed);
                    return;
                }
            };
            match output {
                RtcOutput::Timeout(at) if at <= self.now && immediate > 0 => {
                    immediate -= 1;
                    if let Err(err) = call.rtc.handle_input(Input::Timeout(self.now)) {
                        tracing::debug!(call = handle.0, error = %err, "timeout refused by the call's WebRTC stack");
                    }
                }
                RtcOutput::Timeout(at) => {
                    call.rtc_timeout = at;
                    break;
                }
                RtcOutput::Transmit(transmit) => {
                    call.remote = Some(transmit.destination);
                    let mut contents = transmit.contents.into();
                    call.correct_report(self.now, &mut contents);
                    self.outputs.push_back(Output::Transmit {
                        destination: transmit.destination,
                        contents,
                    });
                }
                RtcOutput::Event(event) => self.on_rtc_event(handle, event),
            }
        }
        self.finish_if_ending(handle);
        self.reschedule(handle);
    }

    // str0m's `Event` is non-exhaustive: the catch-all is required, and the events not named
    // here (data channels, video, bandwidth estimates) do not occur on an audio-only leg.
    #[allow(clippy::wildcard_enum_match_arm)]
    fn on_rtc_event(&mut self, handle: CallHandle, event: Event) {
        let now = self.now;
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if let Role::Model { user } = call.role {
            self.on_model_event(handle, user, event);
            return;
        }
        match event {
            Event::Connected => {
                call.connected_at = Some(now);
                self.outputs
                    .push_back(Output::Event(handle, CallEvent::Connected));
            }
            Event::MediaAdded(added) if added.kind == MediaKind::Audio => {
                call.mid = Some(added.mid);
            }
            Event::RtpPacket(packet) => self.user_audio(
                handle,
                packet.header.payload_type,
                packet.header.timestamp,
                packet.payload,
            ),
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                // Consent lost. The media timeout ends the call if it does not come back.
                tracing::debug!(call = handle.0, "ICE disconnected");
            }
            Event::MediaIngressStats(stats) => {
                self.outputs.push_back(Output::Event(
                    handle,
                    CallEvent::Quality {
                        loss: stats.loss,
                        jitter: f64::from(stats.jitter) / f64::from(OPUS_CLOCK_RATE),
                    },
                ));
            }
            Event::Closed => call.ending = call.ending.or(Some(EndReason::Completed)),
            _ => {}
        }
    }

    // As `on_rtc_event`, for a model leg: its events are the user's call's.
    #[allow(clippy::wildcard_enum_match_arm)]
    fn on_model_event(&mut self, handle: CallHandle, user: CallHandle, event: Event) {
        let now = self.now;
        let Some(leg) = self.calls.get_mut(&handle) else {
            return;
        };
        let event = match event {
            Event::Connected => {
                leg.connected_at = Some(now);
                CallEvent::ModelConnected
            }
            Event::MediaAdded(added) if added.kind == MediaKind::Audio => {
                leg.mid = Some(added.mid);
                return;
            }
            Event::ChannelOpen(channel, label) if label == MODEL_CHANNEL => {
                leg.channel = Some(channel);
                CallEvent::ModelChannelOpen
            }
            Event::ChannelData(data) if Some(data.id) == leg.channel && !data.binary => {
                match String::from_utf8(data.data) {
                    Ok(text) => CallEvent::ModelMessage(text),
                    Err(_) => {
                        tracing::debug!(
                            call = user.0,
                            "model sent a text message that is not UTF-8"
                        );
                        return;
                    }
                }
            }
            Event::ChannelClose(channel) if Some(channel) == leg.channel => {
                // The events are the leg's point: without them it is of no use.
                leg.channel = None;
                leg.ending = leg.ending.or(Some(EndReason::Failed));
                return;
            }
            Event::RtpPacket(packet) => {
                self.model_audio(
                    handle,
                    user,
                    packet.header.payload_type,
                    packet.header.timestamp,
                    packet.payload,
                );
                return;
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                leg.ice_lost_at = Some(now);
                return;
            }
            Event::IceConnectionStateChange(_) => {
                leg.ice_lost_at = None;
                return;
            }
            Event::Closed => {
                leg.ending = leg.ending.or(Some(EndReason::Completed));
                return;
            }
            _ => return,
        };
        self.outputs.push_back(Output::Event(user, event));
    }

    /// The fast receive path: RTP from a leg's known address, decrypted with the leg's own
    /// keys (no str0m). Returns whether the datagram was taken; anything else (STUN, DTLS,
    /// RTCP, another stream, a packet that does not authenticate) goes the usual way.
    fn receive_fast(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) -> bool {
        if !self.config.fast_receive || !srtp::is_rtp(contents) {
            return false;
        }
        let Some(&handle) = self.by_remote.get(&source) else {
            return false;
        };
        let Some(call) = self.calls.get_mut(&handle) else {
            return false;
        };
        let role = call.role;
        let Some(receiver) = call.fast_rx.as_mut() else {
            return false;
        };
        let (pt, timestamp, payload) = match receiver.receive(contents) {
            Received::Rtp {
                pt,
                index,
                timestamp,
                payload,
                ..
            } => {
                call.stats.packets_in_fast += 1;
                self.totals.packets_in_fast += 1;
                if let Some(quality) = call.fast_quality.as_mut() {
                    quality.packet(now, index, timestamp);
                    // Every leg's receiver reports carry its quality; the events are about the
                    // user's side only, as str0m's own statistics are reported.
                    let report = match role {
                        Role::User { .. } => quality.report(now),
                        Role::Model { .. } => None,
                    };
                    if let Some(report) = report {
                        self.outputs.push_back(Output::Event(
                            handle,
                            CallEvent::Quality {
                                loss: report.loss,
                                jitter: report.jitter,
                            },
                        ));
                    }
                }
                (
                    Pt::new_with_value(pt),
                    timestamp,
                    Arc::<[u8]>::from(payload),
                )
            }
            Received::Replayed => return true,
            Received::NotMine => return false,
        };
        let user = match role {
            Role::User { .. } => {
                self.user_audio(handle, pt, timestamp, payload);
                handle
            }
            Role::Model { user } => {
                self.model_audio(handle, user, pt, timestamp, payload);
                user
            }
        };
        self.pump(handle, now);
        // An agent holding the audio back (echo delay) needs its wake-up: str0m was not fed,
        // so no drain has rescheduled the call.
        self.reschedule(user);
        true
    }

    /// A peer's RTCP on a leg whose audio the fast receive path takes: the time of its sender
    /// report is noted for our reception report block. str0m still handles the datagram.
    fn read_peer_report(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) {
        if !self.config.fast_receive || !rtcp::is_rtcp(contents) {
            return;
        }
        let Some(call) = self
            .by_remote
            .get(&source)
            .and_then(|handle| self.calls.get_mut(handle))
        else {
            return;
        };
        let (Some(reports), Some(quality), Some(ssrc)) = (
            call.fast_reports.as_mut(),
            call.fast_quality.as_mut(),
            call.fast_rx.as_ref().and_then(SrtpReceiver::ssrc),
        ) else {
            return;
        };
        if reports
            .open_theirs
            .unprotect(contents, &mut reports.plain)
            .is_ok()
        {
            if let Some(ntp_middle) = rtcp::sender_report_time(&reports.plain, ssrc) {
                quality.sender_report(now, ntp_middle);
            }
        }
    }

    /// Audio (or a key press) from the user's side of a call.
    fn user_audio(&mut self, handle: CallHandle, pt: Pt, rtp_time: u32, payload: Arc<[u8]>) {
        let now = self.now;
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if Some(pt) == call.tele_pt {
            if let Some(key) = call.dtmf.packet(rtp_time, &payload) {
                call.stats.dtmf += 1;
                self.totals.dtmf += 1;
                self.outputs
                    .push_back(Output::Event(handle, CallEvent::Dtmf(key)));
            }
            return;
        }
        if pt != call.opus_pt {
            return;
        }
        if call.last_media.is_none() {
            self.outputs
                .push_back(Output::Event(handle, CallEvent::MediaStarted));
        }
        call.last_media = Some(now);
        count_in(&mut call.stats, &mut self.totals, payload.len());
        call.agent.caller_audio(now, rtp_time, payload);
    }

    /// Audio from a call's model leg, for the user leg's agent to relay.
    fn model_audio(
        &mut self,
        handle: CallHandle,
        user: CallHandle,
        pt: Pt,
        rtp_time: u32,
        payload: Arc<[u8]>,
    ) {
        let now = self.now;
        let Some(leg) = self.calls.get_mut(&handle) else {
            return;
        };
        if pt != leg.opus_pt {
            return;
        }
        let first = leg.last_media.is_none();
        leg.last_media = Some(now);
        count_in(&mut leg.stats, &mut self.totals, payload.len());
        if let Some(user_leg) = self.calls.get_mut(&user) {
            user_leg.agent.model_audio(rtp_time, payload);
        }
        if first {
            self.outputs
                .push_back(Output::Event(user, CallEvent::ModelAudioStarted));
        }
    }

    /// Moves audio on: the agent's to the user, and between a call's legs.
    fn pump(&mut self, handle: CallHandle, now: Instant) {
        match self.calls.get(&handle).map(|c| c.role) {
            Some(Role::User { model }) => {
                self.pump_agent(handle, now);
                if model.is_some() {
                    self.feed_model(handle, now);
                }
            }
            Some(Role::Model { user }) => {
                self.pump_agent(user, now);
                self.feed_model(user, now);
            }
            None => {}
        }
    }

    /// Sends the caller's audio held by the relay to the call's model leg, once it is up.
    fn feed_model(&mut self, user: CallHandle, now: Instant) {
        let Some(Role::User { model: Some(model) }) = self.calls.get(&user).map(|c| c.role) else {
            return;
        };
        if !self.calls.get(&model).is_some_and(|leg| {
            leg.connected_at.is_some() && leg.mid.is_some() && leg.pending_offer.is_none()
        }) {
            return;
        }
        self.agent_out.clear();
        if let Some(user_leg) = self.calls.get_mut(&user) {
            user_leg.agent.take_for_model(&mut self.agent_out);
        }
        self.send_agent_out(model, now);
    }

    /// Sends what the agent has due.
    fn pump_agent(&mut self, handle: CallHandle, now: Instant) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if !call.media_started || call.connected_at.is_none() || call.mid.is_none() {
            return;
        }
        self.agent_out.clear();
        call.agent.poll(now, &mut self.agent_out);
        self.send_agent_out(handle, now);
    }

    /// Writes what was gathered in `agent_out` on leg `handle`'s audio stream.
    fn send_agent_out(&mut self, handle: CallHandle, now: Instant) {
        if self.agent_out.is_empty() {
            return;
        }
        let Some(leg) = self.calls.get_mut(&handle) else {
            return;
        };
        let to_str0m = write_audio(
            leg,
            &mut self.agent_out,
            now,
            &mut self.totals,
            &mut self.outputs,
        );
        // str0m has something to send only if the audio went through it; on the fast send
        // path asking it (a poll of every part of its stack) would be work for nothing on every
        // packet.
        if to_str0m {
            self.drain(handle);
        } else {
            self.reschedule(handle);
        }
    }

    fn check_timers(&mut self, handle: CallHandle, now: Instant) {
        let due = self
            .calls
            .get(&handle)
            .map(|call| call.deadline(&self.config))
            .filter(|(at, _)| *at <= now);
        if let Some((_, reason)) = due {
            self.end(handle, reason);
        }
    }

    fn end(&mut self, handle: CallHandle, reason: EndReason) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if call.ending.is_none() {
            call.ending = Some(reason);
        }
        // A polite close: RTCP BYE and DTLS close_notify, drained below. A stack that cannot
        // close (it never connected) is just stopped.
        if call.rtc.close().is_err() {
            call.rtc.disconnect();
        }
        self.drain(handle);
        self.finish_if_ending(handle);
    }

    fn finish_if_ending(&mut self, handle: CallHandle) {
        let Some(reason) = self.calls.get(&handle).and_then(|c| c.ending) else {
            return;
        };
        let Some(call) = self.calls.remove(&handle) else {
            return;
        };
        self.by_ufrag.remove(&call.ufrag);
        self.by_remote.retain(|_, h| *h != handle);
        match call.role {
            Role::User { model } => {
                self.outputs.push_back(Output::Event(
                    handle,
                    CallEvent::Ended {
                        reason,
                        stats: call.stats,
                    },
                ));
                if let Some(model) = model {
                    self.end(model, reason);
                }
            }
            Role::Model { user } => {
                self.model_legs -= 1;
                // Only a call still going hears that it lost its model.
                if let Some(user_leg) = self.calls.get_mut(&user) {
                    user_leg.role = Role::User { model: None };
                    self.outputs
                        .push_back(Output::Event(user, CallEvent::ModelEnded { reason }));
                }
            }
        }
    }

    /// Puts the call's next wake-up in the heap, unless an earlier one is there already.
    fn reschedule(&mut self, handle: CallHandle) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let wake = call.next_wake(&self.config);
        if call.scheduled.is_none_or(|scheduled| wake < scheduled) {
            call.scheduled = Some(wake);
            self.wakeups.push(Reverse((wake, handle)));
        }
    }
}

impl Call {
    /// Sets up the fast paths the engine is configured for, with the keys DTLS gave the leg.
    fn take_keys(&mut self, now: Instant, keys: &srtp::LegKeys, config: &EngineConfig) {
        if config.fast_receive {
            self.fast_rx = Some(SrtpReceiver::new(&keys.receive));
            self.fast_quality = Some(ReceiveQuality::new(now, OPUS_CLOCK_RATE));
        }
        // The send stream's SSRC is known once the audio line is (`MediaAdded` may come after
        // DTLS): the sender is set up at the first write.
        if config.fast_send {
            self.fast_tx_keys = Some(keys.send.clone());
        }
        self.fast_reports = Some(FastReports::new(keys));
        self.keys_taken = true;
    }

    /// Corrects a report str0m is sending on this leg for the audio the fast paths carried
    /// ([`rtcp`]); other datagrams, and legs off the fast paths, are left alone.
    fn correct_report(&mut self, now: Instant, contents: &mut Vec<u8>) {
        let Some(reports) = self.fast_reports.as_mut() else {
            return;
        };
        if !rtcp::is_rtcp(contents) {
            return;
        }
        let Ok(word) = reports.open_ours.unprotect(contents, &mut reports.plain) else {
            return;
        };
        let sent = self
            .fast_tx
            .as_ref()
            .map(|fast| fast.sent(now, self.stats.packets_out_fast));
        let (quality, receiver) = (self.fast_quality.as_mut(), self.fast_rx.as_ref());
        let block = || {
            let ssrc = receiver?.ssrc()?;
            quality?.report_block(now, ssrc)
        };
        if rtcp::correct(&mut reports.plain, sent.as_ref(), block) {
            let mut sealed = Vec::new();
            if reports
                .seal_ours
                .protect(word, &reports.plain, &mut sealed)
                .is_ok()
            {
                *contents = sealed;
            }
        }
    }

    /// Reads the payload types the negotiation settled on.
    fn learn_payload_types(&mut self) {
        let config = self.rtc.codec_config();
        if let Some(opus) = config.find(|p| p.spec().codec == Codec::Opus) {
            self.opus_pt = opus.pt();
        }
        self.tele_pt = config
            .find(|p| p.spec().codec == Codec::Tele)
            .map(|p| p.pt());
    }

    /// The call's earliest timer and the reason it ends the call.
    fn deadline(&self, config: &EngineConfig) -> (Instant, EndReason) {
        let longest = (
            self.started_at + config.max_call_length,
            EndReason::TimedOut,
        );
        let phase = match (self.role, self.connected_at) {
            // A model leg connects within the connect timeout from its offer (the HTTP exchange
            // included), and then lives until it closes or loses ICE consent for good: the model
            // sends audio only when it speaks.
            (Role::Model { .. }, None) => {
                (self.started_at + config.connect_timeout, EndReason::Failed)
            }
            (Role::Model { .. }, Some(_)) => match self.ice_lost_at {
                Some(lost) => (lost + config.media_timeout, EndReason::Failed),
                None => longest,
            },
            (Role::User { .. }, _) => self.user_phase(config),
        };
        if phase.0 < longest.0 {
            phase
        } else {
            longest
        }
    }

    fn user_phase(&self, config: &EngineConfig) -> (Instant, EndReason) {
        match (self.negotiated_at, self.connected_at) {
            // Outbound, not answered yet: the phone rings.
            (None, _) => (
                self.started_at + config.ring_timeout,
                EndReason::NotAnswered,
            ),
            // Both SDPs known, media not up: ICE or DTLS is failing.
            (Some(negotiated), None) => (negotiated + config.connect_timeout, EndReason::Failed),
            // Up: the user's audio must keep coming.
            (Some(_), Some(connected)) => (
                self.last_media.unwrap_or(connected) + config.media_timeout,
                EndReason::TimedOut,
            ),
        }
    }

    /// When the call next needs the engine: its stack's timer, its agent, or its deadline.
    fn next_wake(&self, config: &EngineConfig) -> Instant {
        let mut wake = self.rtc_timeout.min(self.deadline(config).0);
        if self.media_started && self.connected_at.is_some() {
            if let Some(due) = self.agent.next_due() {
                wake = wake.min(due);
            }
        }
        wake
    }
}

/// Writes `packets` (agent or relayed audio, RTP times relative to the stream's start) on the
/// leg's audio stream with the leg's own sequence numbers and timestamp base. Returns whether
/// str0m was given packets (and so has datagrams to send).
fn write_audio(
    leg: &mut Call,
    packets: &mut Vec<AgentPacket>,
    now: Instant,
    totals: &mut CallStats,
    outputs: &mut VecDeque<Output>,
) -> bool {
    let Some(mid) = leg.mid else {
        packets.clear();
        return false;
    };
    let pt = leg.opus_pt;
    if let Some(keys) = leg.fast_tx_keys.take() {
        leg.fast_tx = FastSender::new(&mut leg.rtc, mid, &keys, now);
    }
    if let (Some(fast), Some(remote)) = (leg.fast_tx.as_mut(), leg.remote) {
        // The fast send path: the packet is ours from header to tag. str0m sends no RTP on
        // this leg at all, so the key never meets the same sequence number twice.
        for packet in packets.drain(..) {
            leg.out_seq += 1;
            count_out(&mut leg.stats, totals, packet.payload.len());
            let rtp_time = leg.out_time_base.wrapping_add(packet.rtp_time);
            let mut contents = Vec::new();
            if fast.seal(
                now,
                *pt,
                leg.out_seq,
                rtp_time,
                &packet.payload,
                &mut contents,
            ) {
                leg.stats.packets_out_fast += 1;
                totals.packets_out_fast += 1;
                outputs.push_back(Output::Transmit {
                    destination: remote,
                    contents,
                });
            }
        }
        return false;
    }
    let mut api = leg.rtc.direct_api();
    let Some(stream) = api.stream_tx_by_mid(mid, None) else {
        packets.clear();
        return false;
    };
    for packet in packets.drain(..) {
        leg.out_seq += 1;
        count_out(&mut leg.stats, totals, packet.payload.len());
        let seq: SeqNo = leg.out_seq.into();
        stream.write_rtp(RtpWrite::new(
            pt,
            seq,
            leg.out_time_base.wrapping_add(packet.rtp_time),
            now,
            packet.payload,
        ));
    }
    true
}

/// A received audio packet, on the leg's and the engine's counts.
fn count_in(stats: &mut CallStats, totals: &mut CallStats, bytes: usize) {
    stats.packets_in += 1;
    stats.bytes_in += bytes as u64;
    totals.packets_in += 1;
    totals.bytes_in += bytes as u64;
}

/// A sent audio packet, on the leg's and the engine's counts.
fn count_out(stats: &mut CallStats, totals: &mut CallStats, bytes: usize) {
    stats.packets_out += 1;
    stats.bytes_out += bytes as u64;
    totals.packets_out += 1;
    totals.bytes_out += bytes as u64;
}

/// Opus's RTP clock (RFC 7587), whatever the audio's own sample rate.
const OPUS_CLOCK_RATE: u32 = 48_000;

/// A plain RTP header (RFC 3550 §5.1): version 2; no padding, extensions, CSRCs or marker.
fn rtp_header(pt: u8, seq: u64, timestamp: u32, ssrc: u32) -> [u8; 12] {
    let mut header = [0u8; 12];
    header[0] = 0x80;
    header[1] = pt & 0x7f;
    // The low 16 bits; the rest is the rollover counter.
    header[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
    header[4..8].copy_from_slice(&timestamp.to_be_bytes());
    header[8..12].copy_from_slice(&ssrc.to_be_bytes());
    header
}

/// Random text for ICE credentials (str0m would generate them, but we need the ufrag up
/// front to demultiplex by it).
fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..len)
        .map(|_| ALPHABET[usize::from(random_u16()) % ALPHABET.len()] as char)
        .collect()
}

fn random_u16() -> u16 {
    random_u32() as u16
}

/// A random number from the standard library's random hasher keys; no RNG crate is needed
/// for ids that only have to be unpredictable to a peer.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    // Each `RandomState` has fresh keys (OS-seeded per thread, then advanced), so an empty
    // SipHash is a different unpredictable number every time. No clock is read.
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish() as u32
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("calls", &self.calls.len())
            .finish_non_exhaustive()
    }
}

/// Payload bytes as the engine shares them between legs.
pub type Payload = Arc<[u8]>;

#[cfg(test)]
mod tests {
    use str0m::rtp::ExtensionMap;

    use super::*;

    fn map(extensions: &[(u8, Extension)]) -> ExtensionMap {
        let mut map = ExtensionMap::empty();
        for (id, extension) in extensions {
            map.set(*id, extension.clone());
        }
        map
    }

    #[test]
    fn header_extensions_take_the_one_byte_form_when_they_fit_and_stamp_the_send_time() {
        let start = Instant::now();
        let negotiated = map(&[(4, Extension::RtpMid), (2, Extension::AbsoluteSendTime)]);
        let mut extensions =
            HeaderExtensions::new(&negotiated, Mid::from("0"), start).expect("negotiated");
        let second = start + Duration::from_millis(1500);
        assert_eq!(
            extensions.stamped(second),
            // RFC 8285 one-byte form, two words: mid "0", then 1.5 s in 6.18 fixed point.
            &[0xbe, 0xde, 0, 2, 0x40, b'0', 0x22, 0x06, 0x00, 0x00, 0, 0]
        );
        assert!(HeaderExtensions::new(&map(&[]), Mid::from("0"), start).is_none());
    }

    #[test]
    fn header_extensions_take_the_two_byte_form_for_an_id_above_14() {
        let start = Instant::now();
        let negotiated = map(&[(15, Extension::RtpMid)]);
        let mut extensions =
            HeaderExtensions::new(&negotiated, Mid::from("audio"), start).expect("negotiated");
        assert_eq!(
            extensions.stamped(start),
            &[0x10, 0x00, 0, 2, 15, 5, b'a', b'u', b'd', b'i', b'o', 0]
        );
    }
}
