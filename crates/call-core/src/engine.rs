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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::{Codec, FormatParams};
use str0m::ice::{IceCreds, StunMessage};
use str0m::media::{Direction, Frequency, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output as RtcOutput, Rtc, RtcConfig};

use crate::agent::{Agent, AgentKind, AgentPacket};
use crate::dtmf::DtmfDetector;
use crate::lifecycle::EndReason;
use crate::sdp;

/// WhatsApp's Opus payload type, and the one we offer.
pub const OPUS_PT: u8 = 111;
/// WhatsApp's telephone-event payload type.
pub const TELEPHONE_EVENT_PT: u8 = 126;

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
}

impl EngineConfig {
    /// Defaults for a host address.
    pub fn new(host: SocketAddr) -> Self {
        Self {
            host,
            public: None,
            connect_timeout: Duration::from_secs(20),
            media_timeout: Duration::from_secs(20),
            max_call_length: Duration::from_secs(60 * 60),
            ring_timeout: Duration::from_secs(60),
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
}

/// One call: the user's WebRTC leg and the agent answering it.
struct Call {
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
}

/// The engine.
pub struct Engine {
    config: EngineConfig,
    /// Boxed: a `Call` is a few KB (str0m's `Rtc` is inline) and the map keeps spare slots.
    calls: HashMap<CallHandle, Box<Call>>,
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
        self.calls.len()
    }

    /// Whether the call exists.
    pub fn has_call(&self, call: CallHandle) -> bool {
        self.calls.contains_key(&call)
    }

    /// Packet and byte counts of every call so far, ended ones included (monotonic).
    pub fn totals(&self) -> CallStats {
        self.totals
    }

    /// Ends every call (shutdown).
    pub fn hang_up_all(&mut self, now: Instant, reason: EndReason) {
        self.now = now;
        let handles: Vec<CallHandle> = self.calls.keys().copied().collect();
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
        self.now = now;
        let prepared = sdp::prepare_whatsapp_offer(offer);
        if !prepared.lines().any(|l| l.starts_with("m=audio")) {
            return Err(CallError::NoAudio);
        }
        let parsed =
            SdpOffer::from_sdp_string(&prepared).map_err(|e| CallError::BadSdp(e.to_string()))?;
        let (handle, mut call) = self.new_call(now, agent, false);
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
        .filter_map(|key| sdp::fmtp_param(&prepared, *call.opus_pt, key).map(|v| (key, v)))
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
        let (handle, mut call) = self.new_call(now, agent, true);
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
        // An agent with no delay answers the packet now, not at the next wake-up.
        self.pump_agent(call, now);
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
            self.pump_agent(call, now);
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

    fn new_call(&mut self, now: Instant, agent: AgentKind, outbound: bool) -> (CallHandle, Call) {
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
            rtc,
            ufrag,
            mid: None,
            opus_pt: Pt::new_with_value(OPUS_PT),
            tele_pt: Some(Pt::new_with_value(TELEPHONE_EVENT_PT)),
            pending_offer: None,
            agent: Agent::new(agent),
            media_started: false,
            started_at: now,
            negotiated_at: (!outbound).then_some(now),
            connected_at: None,
            last_media: None,
            rtc_timeout: now,
            out_seq: u64::from(random_u16()),
            out_time_base: random_u32(),
            dtmf: DtmfDetector::default(),
            stats: CallStats::default(),
            ending: None,
            scheduled: None,
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
            let output = match call.rtc.poll_output() {
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
                    self.outputs.push_back(Output::Transmit {
                        destination: transmit.destination,
                        contents: transmit.contents.into(),
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
        match event {
            Event::Connected => {
                call.connected_at = Some(now);
                self.outputs
                    .push_back(Output::Event(handle, CallEvent::Connected));
            }
            Event::MediaAdded(added) if added.kind == MediaKind::Audio => {
                call.mid = Some(added.mid);
            }
            Event::RtpPacket(packet) => {
                let pt = packet.header.payload_type;
                let rtp_time = packet.header.timestamp;
                if Some(pt) == call.tele_pt {
                    if let Some(key) = call.dtmf.packet(rtp_time, &packet.payload) {
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
                call.stats.packets_in += 1;
                call.stats.bytes_in += packet.payload.len() as u64;
                self.totals.packets_in += 1;
                self.totals.bytes_in += packet.payload.len() as u64;
                call.agent.caller_audio(now, rtp_time, packet.payload);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                // Consent lost. The media timeout ends the call if it does not come back.
                tracing::debug!(call = handle.0, "ICE disconnected");
            }
            Event::MediaIngressStats(stats) => {
                self.outputs.push_back(Output::Event(
                    handle,
                    CallEvent::Quality {
                        loss: stats.loss,
                        jitter: f64::from(stats.jitter) / 48_000.0,
                    },
                ));
            }
            Event::Closed => call.ending = call.ending.or(Some(EndReason::Completed)),
            _ => {}
        }
    }

    /// Sends what the agent has due.
    fn pump_agent(&mut self, handle: CallHandle, now: Instant) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if !call.media_started || call.connected_at.is_none() {
            return;
        }
        let Some(mid) = call.mid else {
            return;
        };
        self.agent_out.clear();
        call.agent.poll(now, &mut self.agent_out);
        if self.agent_out.is_empty() {
            return;
        }
        let pt = call.opus_pt;
        let mut api = call.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(mid, None) else {
            return;
        };
        for packet in self.agent_out.drain(..) {
            call.out_seq += 1;
            call.stats.packets_out += 1;
            call.stats.bytes_out += packet.payload.len() as u64;
            self.totals.packets_out += 1;
            self.totals.bytes_out += packet.payload.len() as u64;
            let seq: SeqNo = call.out_seq.into();
            stream.write_rtp(RtpWrite::new(
                pt,
                seq,
                call.out_time_base.wrapping_add(packet.rtp_time),
                now,
                packet.payload,
            ));
        }
        self.drain(handle);
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
        if let Some(call) = self.calls.remove(&handle) {
            self.by_ufrag.remove(&call.ufrag);
            self.by_remote.retain(|_, h| *h != handle);
            self.outputs.push_back(Output::Event(
                handle,
                CallEvent::Ended {
                    reason,
                    stats: call.stats,
                },
            ));
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
        let phase = match (self.negotiated_at, self.connected_at) {
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
        };
        if phase.0 < longest.0 {
            phase
        } else {
            longest
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
