//! Memory and CPU of the engine alone, without sockets, a runtime or a database: N
//! WhatsApp-like peers (str0m, in memory) call in, connect, and stream Opus for a while through
//! the echo agent. Prints one JSON line.
//!
//! cargo run --release -p call-core --example engine_load -- [calls] [seconds] [fast | str0m]
//!
//! `fast` (the default, as the service runs) has the engine's fast paths carry the audio;
//! `str0m` leaves it to str0m. `engine_us_per_echoed_packet` is the time spent inside the
//! engine's own calls while streaming, the peers' work left out: the user-space part of the
//! relay's cost per packet, with no kernel in it, steady enough to compare changes by.

#![allow(clippy::print_stdout)] // the result line is the output

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use call_core::{AgentKind, CallHandle, Engine, EngineConfig, Output};
use str0m::change::SdpAnswer;
use str0m::media::{Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output as RtcOutput, Rtc};

struct Peer {
    addr: SocketAddr,
    rtc: Rtc,
    mid: Mid,
    timeout: Instant,
    connected: bool,
    received: u64,
    seq: u64,
}

fn rss_kb() -> u64 {
    fakes::proc::status_kb("/proc/self/status", "VmRSS:")
}

fn cpu_secs() -> f64 {
    fakes::proc::cpu_ticks("/proc/self/stat").unwrap_or(0) as f64 / 100.0
}

/// Runs `work`, adding the time it took to `spent`.
fn timed<T>(spent: &mut Duration, work: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = work();
    *spent += started.elapsed();
    result
}

type Net = VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>;

fn drain_engine(engine: &mut Engine, net: &mut Net, engine_addr: SocketAddr) -> Instant {
    loop {
        match engine.poll_output() {
            Output::Timeout(at) => return at,
            Output::Transmit {
                destination,
                contents,
            } => net.push_back((engine_addr, destination, contents)),
            Output::Event(..) => {}
        }
    }
}

fn drain_peer(peer: &mut Peer, net: &mut Net) {
    loop {
        match peer.rtc.poll_output() {
            Ok(RtcOutput::Timeout(at)) => {
                peer.timeout = at;
                return;
            }
            Ok(RtcOutput::Transmit(t)) => {
                net.push_back((peer.addr, t.destination, t.contents.into()))
            }
            Ok(RtcOutput::Event(Event::Connected)) => peer.connected = true,
            Ok(RtcOutput::Event(Event::RtpPacket(_))) => peer.received += 1,
            Ok(RtcOutput::Event(_)) => {}
            Err(e) => panic!("peer: {e}"),
        }
    }
}

/// The engine, its peers and the network between them.
struct World {
    engine: Engine,
    peers: Vec<Peer>,
    net: Net,
    engine_addr: SocketAddr,
    engine_timeout: Instant,
    by_addr: std::collections::HashMap<SocketAddr, usize>,
    /// Time spent inside the engine's calls.
    engine_time: Duration,
}

impl World {
    /// One instant of virtual time: deliver, run due timers, deliver what they caused.
    fn step(&mut self, now: Instant) {
        self.deliver(now);
        timed(&mut self.engine_time, || {
            if self.engine_timeout <= now {
                self.engine.handle_timeout(now);
            }
            // Sends what the timeout released; the deadline is read after the second delivery.
            drain_engine(&mut self.engine, &mut self.net, self.engine_addr);
        });
        for peer in self.peers.iter_mut().filter(|p| p.timeout <= now) {
            peer.rtc.handle_input(Input::Timeout(now)).expect("timeout");
            drain_peer(peer, &mut self.net);
        }
        self.deliver(now);
        self.engine_timeout = timed(&mut self.engine_time, || {
            drain_engine(&mut self.engine, &mut self.net, self.engine_addr)
        });
    }

    fn deliver(&mut self, now: Instant) {
        while let Some((from, to, datagram)) = self.net.pop_front() {
            if to == self.engine_addr {
                timed(&mut self.engine_time, || {
                    self.engine.handle_receive(now, from, &datagram)
                });
            } else if let Some(&i) = self.by_addr.get(&to) {
                let receive = Receive::new(Protocol::Udp, from, to, &datagram).expect("datagram");
                self.peers[i]
                    .rtc
                    .handle_input(Input::Receive(now, receive))
                    .expect("input");
                drain_peer(&mut self.peers[i], &mut self.net);
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let calls: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(300);
    let seconds: u64 = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(10);
    let fast = args.get(3).map(String::as_str) != Some("str0m");
    let engine_addr: SocketAddr = "10.0.0.1:40000".parse().expect("addr");
    let start = Instant::now();
    let mut now = start;
    let mut config = EngineConfig::new(engine_addr);
    config.fast_receive = fast;
    config.fast_send = fast;
    let mut engine = Engine::new(config, now);
    let rss_idle = rss_kb();
    let mut peers = Vec::with_capacity(calls);
    let mut handles: Vec<CallHandle> = Vec::with_capacity(calls);
    let mut net: Net = VecDeque::new();

    let setup_cpu = cpu_secs();
    for i in 0..calls {
        let addr: SocketAddr = format!("10.1.{}.{}:5000", i / 250, i % 250 + 1)
            .parse()
            .expect("addr");
        let mut rtc = fakes::whatsapp_peer::whatsapp_rtc(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        let (mid, pending, offer) = fakes::whatsapp_peer::offer(&mut rtc);
        let (handle, answer) = engine
            .accept_offer(
                now,
                &offer,
                AgentKind::Echo {
                    delay: Duration::ZERO,
                },
            )
            .expect("accepted");
        rtc.sdp_api()
            .accept_answer(
                pending,
                SdpAnswer::from_sdp_string(&answer).expect("answer"),
            )
            .expect("applied");
        let mut peer = Peer {
            addr,
            rtc,
            mid,
            timeout: now,
            connected: false,
            received: 0,
            seq: 0,
        };
        drain_peer(&mut peer, &mut net);
        peers.push(peer);
        handles.push(handle);
    }
    let engine_timeout = drain_engine(&mut engine, &mut net, engine_addr);
    let by_addr: std::collections::HashMap<SocketAddr, usize> =
        peers.iter().enumerate().map(|(i, p)| (p.addr, i)).collect();

    let mut world = World {
        engine,
        peers,
        net,
        engine_addr,
        engine_timeout,
        by_addr,
        engine_time: Duration::ZERO,
    };

    // Connect everyone (virtual time, 1 ms steps).
    while !world.peers.iter().all(|p| p.connected) {
        now += Duration::from_millis(1);
        world.step(now);
    }
    for handle in &handles {
        world.engine.start_media(now, *handle).expect("call");
    }
    let setup_cpu = cpu_secs() - setup_cpu;

    // Stream: every peer sends one 60-byte Opus packet per 20 ms of virtual time.
    let stream_cpu = cpu_secs();
    world.engine_time = Duration::ZERO;
    let wall = Instant::now();
    let frames = seconds * 50;
    let payload: Arc<[u8]> = Arc::from(vec![0x48u8; 60]);
    for _ in 0..frames {
        now += Duration::from_millis(20);
        for peer in world.peers.iter_mut() {
            peer.seq += 1;
            let seq: SeqNo = peer.seq.into();
            if let Some(stream) = peer.rtc.direct_api().stream_tx_by_mid(peer.mid, None) {
                stream.write_rtp(RtpWrite::new(
                    Pt::new_with_value(111),
                    seq,
                    (peer.seq * 960) as u32,
                    now,
                    payload.clone(),
                ));
            }
            drain_peer(peer, &mut world.net);
        }
        world.step(now);
    }
    let stream_cpu = cpu_secs() - stream_cpu;
    let sent = frames * calls as u64;
    let World {
        engine,
        peers,
        engine_time,
        ..
    } = world;
    let echoed: u64 = peers.iter().map(|p| p.received).sum();
    let rss = rss_kb();
    // The peers are in this process too: count the engine's share by dropping them.
    drop(peers);
    let rss_engine_only = rss_kb();
    println!(
        "{{\"calls\":{calls},\"seconds\":{seconds},\"packets_sent\":{sent},\"packets_echoed\":{echoed},\"setup_cpu_s\":{setup_cpu:.3},\"stream_cpu_s\":{stream_cpu:.3},\"fast_paths\":{fast},\"cpu_us_per_echoed_packet_incl_peers\":{:.2},\"engine_us_per_echoed_packet\":{:.2},\"wall_s\":{:.2},\"rss_idle_kb\":{rss_idle},\"rss_kb\":{rss},\"rss_engine_only_kb\":{rss_engine_only},\"engine_kb_per_call\":{}}}",
        stream_cpu * 1e6 / echoed.max(1) as f64,
        engine_time.as_secs_f64() * 1e6 / echoed.max(1) as f64,
        wall.elapsed().as_secs_f64(),
        (rss_engine_only.saturating_sub(rss_idle)) / calls as u64,
    );
    drop(engine);
    let _ = start;
}
