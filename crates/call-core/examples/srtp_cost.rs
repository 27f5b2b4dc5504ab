//! What the SRTP of one echoed packet costs on this machine, alone: one 80-byte Opus packet
//! (callgen's size) unprotected with one direction's keys and protected again with the other's,
//! as the fast paths do for every packet the echo agent returns, in a tight loop with hot
//! caches. It is the part of the relay's CPU per echoed packet that no design of ours can drop:
//! the two directions have different keys, so every packet is opened and sealed again.
//!
//! cargo run --release -p call-core --example srtp_cost -- [profile: gcm128 | gcm256 | cm] [packets]

#![allow(clippy::print_stdout)] // the result line is the output

use std::time::Instant;

use call_core::srtp::{SrtpMaster, SrtpProfile, SrtpStream};

fn main() {
    let mut args = std::env::args().skip(1);
    let profile = match args.next().as_deref() {
        Some("gcm256") => SrtpProfile::AeadAes256Gcm,
        Some("cm") => SrtpProfile::Aes128CmSha1_80,
        _ => SrtpProfile::AeadAes128Gcm,
    };
    let packets: u32 = args
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000_000);
    let (key_len, salt_len) = (profile.key_len(), profile.salt_len());
    let theirs = SrtpMaster::new(profile, &vec![7; key_len], &vec![9; salt_len]);
    let ours = SrtpMaster::new(profile, &vec![3; key_len], &vec![5; salt_len]);
    let (Some(theirs), Some(ours)) = (theirs, ours) else {
        unreachable!("the lengths are the profile's");
    };

    // The caller's packet: a 12-byte RTP header and 80 bytes of payload, sealed as it arrives.
    let mut header = vec![0x80, 111, 0, 1];
    header.extend(960u32.to_be_bytes());
    header.extend(0x1234_5678u32.to_be_bytes());
    let payload = [0x48u8; 80];
    let mut arriving = Vec::new();
    SrtpStream::new(&theirs, true)
        .protect_parts(0, &header, &payload, &mut arriving)
        .expect("an RTP header");

    let mut open = SrtpStream::new(&theirs, false);
    let mut seal = SrtpStream::new(&ours, true);
    let (mut plain, mut leaving) = (Vec::new(), Vec::new());
    let started = Instant::now();
    for _ in 0..packets {
        let at = open
            .unprotect(0, std::hint::black_box(&arriving), &mut plain)
            .expect("it authenticates");
        seal.protect_parts(0, &plain[..at], &plain[at..], &mut leaving)
            .expect("an RTP header");
        std::hint::black_box(&leaving);
    }
    let elapsed = started.elapsed();
    println!(
        "SRTP profile={profile:?} packets={packets} {:.0} ns per echoed packet (one unprotect and one protect of {} bytes)",
        elapsed.as_nanos() as f64 / f64::from(packets),
        payload.len(),
    );
}
