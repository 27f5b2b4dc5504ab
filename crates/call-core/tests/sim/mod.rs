//! A simulated network for the engine: WhatsApp-like peers (str0m, ice-lite, WhatsApp's SDP
//! shape) exchange datagrams with the engine in memory, with a virtual clock and latency.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use call_core::{AgentKind, CallEvent, CallHandle, Engine, EngineConfig, Output};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::media::{Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::stats::{MediaEgressStats, MediaIngressStats};
use str0m::{Candidate, Event, Input, Output as RtcOutput, Rtc};

pub use fakes::whatsapp_peer::WHATSAPP_FMTP;

pub const ENGINE_ADDR: &str = "10.0.0.1:40000";
pub const LATENCY: Duration = Duration::from_millis(5);

/// A peer on the far side: WhatsApp's media server (or a callee's phone).
pub struct Peer {
    pub addr: SocketAddr,
    pub rtc: Rtc,
    pub mid: Option<Mid>,
    pub timeout: Instant,
    pub connected: bool,
    pub closed: bool,
    /// Audio packets received: (rtp timestamp, payload).
    pub received: Vec<(u32, Vec<u8>)>,
    pub received_ssrcs: Vec<u32>,
    /// Per audio packet received: whether it carried the mid and abs-send-time extensions.
    pub received_extensions: Vec<(bool, bool)>,
    seq: u64,
    rtp_time: u32,
    pending: Option<SdpPendingOffer>,
    /// When set, the peer drops everything (a dead media server).
    pub deaf: bool,
    /// A model peer's event channel, once open.
    pub channel: Option<ChannelId>,
    /// Text messages received on it.
    pub messages: Vec<String>,
    /// Statistics of what it sends, with what our receiver reports say of it.
    pub egress: Vec<MediaEgressStats>,
    /// Statistics of what it receives, with what our sender reports say of it.
    pub ingress: Vec<MediaIngressStats>,
}

impl Peer {
    /// A WhatsApp-like media server: ice-lite, Opus 111 and telephone-event 126.
    pub fn whatsapp(addr: &str, now: Instant) -> Self {
        let mut rtc = fakes::whatsapp_peer::whatsapp_config()
            .set_stats_interval(Some(Duration::from_secs(1)))
            .build(now);
        let addr: SocketAddr = addr.parse().expect("addr");
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        Self {
            addr,
            rtc,
            mid: None,
            timeout: now,
            connected: false,
            closed: false,
            received: Vec::new(),
            received_ssrcs: Vec::new(),
            received_extensions: Vec::new(),
            seq: 1000,
            rtp_time: 48_000,
            pending: None,
            deaf: false,
            channel: None,
            messages: Vec::new(),
            egress: Vec::new(),
            ingress: Vec::new(),
        }
    }

    /// A peer like OpenAI's realtime endpoint: full ICE, answers with DTLS active.
    pub fn model(addr: &str, now: Instant) -> Self {
        let mut peer = Self::whatsapp(addr, now);
        peer.rtc = fakes::realtime_peer::model_rtc(now);
        peer.rtc
            .add_local_candidate(Candidate::host(peer.addr, "udp").expect("candidate"));
        peer
    }

    /// Sends a text message on the model peer's channel.
    pub fn send_message(&mut self, text: &str) {
        let channel = self.channel.expect("channel open");
        let mut channel = self.rtc.channel(channel).expect("channel");
        assert!(channel.write(false, text.as_bytes()).expect("write"));
    }

    /// The offer WhatsApp sends in a `connect` webhook: ice-lite, `actpass`, WhatsApp's fmtp.
    pub fn offer(&mut self) -> String {
        let (mid, pending, text) = fakes::whatsapp_peer::offer(&mut self.rtc);
        self.mid = Some(mid);
        self.pending = Some(pending);
        text
    }

    pub fn accept_answer(&mut self, answer: &str) {
        let pending = self.pending.take().expect("an offer is pending");
        self.rtc
            .sdp_api()
            .accept_answer(
                pending,
                SdpAnswer::from_sdp_string(answer).expect("answer parses"),
            )
            .expect("answer accepted");
    }

    /// Answers our outbound offer, as the callee's side does.
    pub fn answer(&mut self, offer: &str) -> String {
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(SdpOffer::from_sdp_string(offer).expect("offer parses"))
            .expect("offer accepted");
        answer.to_sdp_string()
    }

    /// A packet lost on the way: its sequence number and 20 ms of RTP time are used up, and
    /// nothing is sent.
    pub fn lose_one(&mut self) {
        self.seq += 1;
        self.rtp_time = self.rtp_time.wrapping_add(960);
    }

    /// Sends one 20 ms Opus packet with `payload` (or a DTMF packet with PT 126).
    pub fn send(&mut self, now: Instant, pt: u8, rtp_time: Option<u32>, payload: &[u8]) {
        let mid = self.mid.expect("negotiated");
        self.seq += 1;
        let time = rtp_time.unwrap_or_else(|| {
            self.rtp_time = self.rtp_time.wrapping_add(960);
            self.rtp_time
        });
        let mut api = self.rtc.direct_api();
        let stream = api.stream_tx_by_mid(mid, None).expect("send stream");
        let seq: SeqNo = self.seq.into();
        stream.write_rtp(RtpWrite::new(
            Pt::new_with_value(pt),
            seq,
            time,
            now,
            Arc::<[u8]>::from(payload),
        ));
    }
}

/// The engine and its peers on a virtual network.
pub struct Sim {
    pub now: Instant,
    pub engine: Engine,
    pub engine_addr: SocketAddr,
    pub engine_timeout: Instant,
    pub peers: Vec<Peer>,
    /// (deliver at, from, to, datagram)
    in_flight: VecDeque<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    pub events: Vec<(Instant, CallHandle, CallEvent)>,
}

impl Sim {
    pub fn new() -> Self {
        Self::with_config(|c| c)
    }

    /// An engine that decrypts incoming audio itself (`EngineConfig::fast_receive`), and with
    /// `send`, encrypts and sends outgoing audio itself too (`EngineConfig::fast_send`).
    pub fn fast(send: bool) -> Self {
        Self::with_config(|mut c| {
            c.fast_receive = true;
            c.fast_send = send;
            c
        })
    }

    pub fn with_config(f: impl FnOnce(EngineConfig) -> EngineConfig) -> Self {
        let now = Instant::now();
        let engine_addr: SocketAddr = ENGINE_ADDR.parse().expect("addr");
        let config = f(EngineConfig::new(engine_addr));
        Self {
            now,
            engine: Engine::new(config, now),
            engine_addr,
            engine_timeout: now,
            peers: Vec::new(),
            in_flight: VecDeque::new(),
            events: Vec::new(),
        }
    }

    pub fn add_peer(&mut self, addr: &str) -> usize {
        self.peers.push(Peer::whatsapp(addr, self.now));
        self.peers.len() - 1
    }

    /// Gives `call` a model leg answered by a new model peer at `addr`.
    pub fn add_model_leg(&mut self, call: CallHandle, addr: &str) -> usize {
        self.peers.push(Peer::model(addr, self.now));
        let m = self.peers.len() - 1;
        let offer = self
            .engine
            .offer_model_leg(self.now, call)
            .expect("model leg offered");
        self.drain_engine();
        let answer =
            fakes::realtime_peer::answer(&mut self.peers[m].rtc, &offer).expect("model answers");
        self.drain_peer(m);
        self.engine
            .accept_model_answer(self.now, call, &answer)
            .expect("answer applied");
        self.drain_engine();
        m
    }

    /// An inbound call from peer `p`: its offer, our answer.
    pub fn inbound_call(&mut self, p: usize, agent: AgentKind) -> CallHandle {
        let offer = self.peers[p].offer();
        self.inbound_call_from_offer_with(p, &offer, agent)
    }

    /// An inbound call from peer `p` with the echo agent, given its offer text.
    pub fn inbound_call_from_offer(&mut self, p: usize, offer: &str) -> CallHandle {
        self.inbound_call_from_offer_with(
            p,
            offer,
            AgentKind::Echo {
                delay: Duration::from_millis(200),
            },
        )
    }

    fn inbound_call_from_offer_with(
        &mut self,
        p: usize,
        offer: &str,
        agent: AgentKind,
    ) -> CallHandle {
        let (call, answer) = self
            .engine
            .accept_offer(self.now, offer, agent)
            .expect("offer accepted");
        self.drain_engine();
        self.peers[p].accept_answer(&answer);
        self.drain_peer(p);
        call
    }

    /// Drains the engine's outputs into the network.
    pub fn drain_engine(&mut self) {
        loop {
            match self.engine.poll_output() {
                Output::Timeout(at) => {
                    self.engine_timeout = at;
                    return;
                }
                Output::Transmit {
                    destination,
                    contents,
                } => self.in_flight.push_back((
                    self.now + LATENCY,
                    self.engine_addr,
                    destination,
                    contents,
                )),
                Output::Event(call, event) => self.events.push((self.now, call, event)),
            }
        }
    }

    pub fn drain_peer(&mut self, p: usize) {
        let now = self.now;
        let peer = &mut self.peers[p];
        loop {
            match peer.rtc.poll_output().expect("peer output") {
                RtcOutput::Timeout(at) => {
                    peer.timeout = at;
                    return;
                }
                RtcOutput::Transmit(t) => {
                    if !peer.deaf {
                        self.in_flight.push_back((
                            now + LATENCY,
                            peer.addr,
                            t.destination,
                            t.contents.into(),
                        ))
                    }
                }
                RtcOutput::Event(event) => match event {
                    Event::Connected => peer.connected = true,
                    Event::Closed => peer.closed = true,
                    Event::MediaAdded(added) => peer.mid = Some(added.mid),
                    Event::ChannelOpen(channel, _) => peer.channel = Some(channel),
                    Event::ChannelData(data) => peer
                        .messages
                        .push(String::from_utf8(data.data).expect("text")),
                    Event::MediaEgressStats(stats) => peer.egress.push(stats),
                    Event::MediaIngressStats(stats) => peer.ingress.push(stats),
                    Event::RtpPacket(packet) => {
                        peer.received_ssrcs.push(*packet.header.ssrc);
                        let extensions = &packet.header.ext_vals;
                        peer.received_extensions
                            .push((extensions.mid.is_some(), extensions.abs_send_time.is_some()));
                        peer.received
                            .push((packet.header.timestamp, packet.payload.to_vec()));
                    }
                    _ => {}
                },
            }
        }
    }

    /// Advances the virtual clock by `duration`, delivering datagrams and timeouts in order.
    pub fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        loop {
            let next_packet = self.in_flight.iter().map(|(at, ..)| *at).min();
            let next_peer = self.peers.iter().map(|p| p.timeout).min();
            let next = [Some(self.engine_timeout), next_packet, next_peer]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(until)
                .max(self.now);
            if next > until {
                self.now = until;
                return;
            }
            self.now = next;
            self.step();
        }
    }

    /// Runs until `done` holds, at most `limit` of virtual time.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) {
        let until = self.now + limit;
        while !done(self) {
            assert!(self.now < until, "condition not reached within {limit:?}");
            self.run_for(Duration::from_millis(5));
        }
    }

    fn step(&mut self) {
        let now = self.now;
        // Datagrams due.
        while let Some(index) = self.in_flight.iter().position(|(at, ..)| *at <= now) {
            let Some((_, from, to, contents)) = self.in_flight.remove(index) else {
                break;
            };
            if to == self.engine_addr {
                self.engine.handle_receive(now, from, &contents);
                self.drain_engine();
            } else if let Some(p) = self.peers.iter().position(|peer| peer.addr == to) {
                if self.peers[p].deaf {
                    continue;
                }
                let receive = Receive::new(Protocol::Udp, from, to, &contents).expect("datagram");
                self.peers[p]
                    .rtc
                    .handle_input(Input::Receive(now, receive))
                    .expect("peer input");
                self.drain_peer(p);
            }
        }
        if self.engine_timeout <= now {
            self.engine.handle_timeout(now);
            self.drain_engine();
        }
        for p in 0..self.peers.len() {
            if self.peers[p].timeout <= now && self.peers[p].rtc.is_alive() {
                self.peers[p]
                    .rtc
                    .handle_input(Input::Timeout(now))
                    .expect("peer timeout");
                self.drain_peer(p);
            }
        }
    }

    /// Peer `p` sends `n` Opus packets, one every 20 ms (running the network meanwhile).
    pub fn talk(&mut self, p: usize, n: usize, payload: impl Fn(usize) -> Vec<u8>) {
        for i in 0..n {
            let now = self.now;
            self.peers[p].send(now, 111, None, &payload(i));
            self.drain_peer(p);
            self.run_for(Duration::from_millis(20));
        }
    }

    pub fn events_of(&self, call: CallHandle) -> Vec<&CallEvent> {
        self.events
            .iter()
            .filter(|(_, c, _)| *c == call)
            .map(|(_, _, e)| e)
            .collect()
    }

    pub fn ended(&self, call: CallHandle) -> Option<call_core::EndReason> {
        self.events_of(call).into_iter().find_map(|e| match e {
            CallEvent::Ended { reason, .. } => Some(*reason),
            _ => None,
        })
    }
}
