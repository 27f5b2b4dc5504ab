//! The floor under the relay's CPU: what it costs just to move the benchmark's datagrams.
//!
//! The anchor's CPU target compares whole bridges, and part of any bridge's CPU is the kernel's
//! work for each datagram it reads and writes (on loopback the writer's side also runs the
//! delivery into the receiver's socket and wakes the receiver). This program measures that part
//! alone: an echo process with the media thread's own socket and loop (`media::bind`, one
//! edge-triggered `epoll`, `recvmmsg` bursts, one `sendmmsg` per wake-up) and no SRTP, ICE or
//! call behind it, fed the load the anchor's callgen makes: one socket per call, one 80-byte
//! packet per call every 20 ms, the calls spread over 1 ms slots. It prints one `FLOOR` line
//! with the echo process's CPU, measured as compare.sh measures a bridge (`utime + stime` from
//! `/proc`), over a steady window.
//!
//! cargo run --release -p whatsapp-bridge --example udp_floor -- [calls] [seconds]
//!
//! `bench/calls/cpu-split.sh` runs it beside the anchor and our bridge; docs/performance.md
//! records what it shows.

#![allow(clippy::print_stdout)] // the result line is the output

use std::io::{BufRead, BufReader, ErrorKind};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mio::net::UdpSocket as MioUdpSocket;
use mio::{Events, Interest, Poll, Token};
use whatsapp_bridge::media::batch::{self, Read};

/// callgen's packet: 80 bytes every 20 ms per call.
const PACKET: usize = 80;
const PERIOD_MS: u64 = 20;
/// Time for the echo to settle before the window opens, and for late echoes after it.
const WARM_UP: Duration = Duration::from_secs(3);
const GRACE: Duration = Duration::from_millis(1500);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("echo") {
        return echo();
    }
    let number = |i: usize, default: u64| -> anyhow::Result<u64> {
        args.get(i)
            .map_or(Ok(default), |s| s.parse().context("a number"))
    };
    let calls = usize::try_from(number(0, 300)?)?;
    let seconds = number(1, 20)?;
    load(calls, Duration::from_secs(seconds))
}

/// The echo side: every datagram goes back to where it came from, through the media thread's
/// socket calls. Prints its address, then runs until killed.
fn echo() -> anyhow::Result<()> {
    let socket = whatsapp_bridge::media::bind("127.0.0.1:0".parse()?)?;
    let mut socket = MioUdpSocket::from_std(socket);
    println!("{}", socket.local_addr()?);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut socket, Token(0), Interest::READABLE)?;
    let mut events = Events::with_capacity(8);
    let mut receiver = batch::Receiver::new();
    let mut sender = batch::Sender::new();
    let mut more_to_read = false;
    loop {
        let wait = if more_to_read {
            Some(Duration::ZERO)
        } else {
            None
        };
        if let Err(err) = poll.poll(&mut events, wait) {
            if err.kind() != ErrorKind::Interrupted {
                return Err(err.into());
            }
        }
        more_to_read |= !events.is_empty();
        if more_to_read {
            more_to_read = match receiver.receive(&socket, |source, contents| {
                sender.push(&socket, source, contents.to_vec());
            }) {
                Ok(Read::Datagrams(n)) => n == batch::BURST,
                Ok(Read::Empty) => false,
                Err(_) => true,
            };
            sender.flush(&socket);
        }
    }
}

/// Ends the echo process however `load` returns.
struct EchoProcess(Child);

impl Drop for EchoProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn load(calls: usize, window: Duration) -> anyhow::Result<()> {
    let mut child = EchoProcess(
        Command::new(std::env::current_exe()?)
            .arg("echo")
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the echo process")?,
    );
    let stat = format!("/proc/{}/stat", child.0.id());
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().context("echo's stdout")?).read_line(&mut line)?;
    let echo: SocketAddr = line.trim().parse().context("echo's address")?;

    let mut sockets = Vec::with_capacity(calls);
    for _ in 0..calls {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_nonblocking(true)?;
        sockets.push(socket);
    }
    let senders = sockets
        .iter()
        .map(UdpSocket::try_clone)
        .collect::<Result<Vec<_>, _>>()?;
    let sending = Arc::new(AtomicBool::new(true));
    let sender = {
        let sending = sending.clone();
        std::thread::spawn(move || send(&senders, echo, &sending))
    };

    let mut poll = Poll::new()?;
    let mut receivers = Vec::with_capacity(calls);
    for (i, socket) in sockets.into_iter().enumerate() {
        let mut socket = MioUdpSocket::from_std(socket);
        poll.registry()
            .register(&mut socket, Token(i), Interest::READABLE)?;
        receivers.push(socket);
    }
    let mut events = Events::with_capacity(1024);
    let mut buffer = [0u8; 2048];
    let mut echoed = 0u64;
    let started = Instant::now();
    let opens = started + WARM_UP;
    let closes = opens + window;
    let mut echoed_at_open = None;
    let mut cpu_at_open = 0;
    let (mut echoed_in_window, mut cpu_in_window) = (None, 0);
    while Instant::now() < closes + GRACE {
        poll.poll(&mut events, Some(Duration::from_millis(10)))?;
        for event in &events {
            let Some(socket) = receivers.get(event.token().0) else {
                continue;
            };
            while socket.recv_from(&mut buffer).is_ok() {
                echoed += 1;
            }
        }
        let now = Instant::now();
        if echoed_at_open.is_none() && now >= opens {
            echoed_at_open = Some(echoed);
            cpu_at_open = fakes::proc::cpu_ticks(&stat)?;
        }
        if echoed_in_window.is_none() && now >= closes {
            echoed_in_window = Some(echoed - echoed_at_open.unwrap_or(0));
            cpu_in_window = fakes::proc::cpu_ticks(&stat)? - cpu_at_open;
            sending.store(false, Ordering::Relaxed);
        }
    }
    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("the sender panicked"))??;
    let in_window = echoed_in_window.unwrap_or(0);
    if in_window == 0 {
        bail!("nothing came back from the echo");
    }
    // The kernel counts CPU in clock ticks of 10 ms (USER_HZ 100).
    let cores = cpu_in_window as f64 / 100.0 / window.as_secs_f64();
    let pps = in_window as f64 / window.as_secs_f64();
    println!(
        "FLOOR calls={calls} pps={pps:.0} sent={sent} echoed={echoed} loss={:.3}% cpu={cores:.3}cores ({:.1} us per echoed packet)",
        100.0 * sent.saturating_sub(echoed) as f64 / sent.max(1) as f64,
        cores / pps * 1e6,
    );
    Ok(())
}

/// One packet per call every 20 ms, the calls spread over the period's 1 ms slots, as callgen
/// sends them; returns how many were sent.
fn send(sockets: &[UdpSocket], echo: SocketAddr, sending: &AtomicBool) -> anyhow::Result<u64> {
    let mut packet = [0u8; PACKET];
    packet[0] = 0x48; // an Opus TOC byte, as callgen's payloads start
    let mut sent = 0u64;
    let mut next = Instant::now();
    let mut tick = 0u64;
    while sending.load(Ordering::Relaxed) {
        let slot = usize::try_from(tick % PERIOD_MS)?;
        for socket in sockets
            .iter()
            .skip(slot)
            .step_by(usize::try_from(PERIOD_MS)?)
        {
            packet[1..9].copy_from_slice(&sent.to_be_bytes());
            if socket.send_to(&packet, echo).is_ok() {
                sent += 1;
            }
        }
        tick += 1;
        next += Duration::from_millis(1);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok(sent)
}
