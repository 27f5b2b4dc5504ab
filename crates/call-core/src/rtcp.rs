//! The RTCP reports of a leg whose audio bypasses str0m (the fast paths), made true again.
//!
//! str0m still decides when a leg reports and still writes, numbers and encrypts the reports,
//! but it never sees the audio the fast paths carry: its sender report counts no packets and
//! has no RTP time, and its receiver report has no block about the stream we receive. A peer
//! reads those as "nothing sent" and "nothing heard" (WhatsApp's media server and browsers
//! judge a call's quality and round trip from them). So the engine opens each report str0m
//! sends on such a leg, and this module corrects it in place (RFC 3550 §6.4):
//!
//! - a sender report of the fast-sent stream gets the fast path's packet and octet counts
//!   added, and the RTP time of the audio sent at that moment;
//! - the first sender or receiver report gets the fast path's reception report block (loss,
//!   highest sequence number, jitter, and the timing of the peer's last sender report, from
//!   which the peer works out the round trip), or has str0m's block for that stream replaced.
//!
//! The engine then seals the result under str0m's own SRTCP index ([`crate::srtp::SrtcpStream`]).
//! Anything that does not parse as a compound RTCP packet is left as str0m made it.

use crate::srtp::u32_at;

/// The sender report's packet type.
const SR: u8 = 200;
/// The receiver report's packet type.
const RR: u8 = 201;
/// A reception report block's length.
const BLOCK_LEN: usize = 24;
/// Where a report's blocks start: after the sender info (SR) or the reporter's SSRC (RR).
const SR_BLOCKS_AT: usize = 28;
const RR_BLOCKS_AT: usize = 8;
/// The most blocks the 5-bit count can say.
const MAX_BLOCKS: u8 = 31;

/// What the fast send path has sent on a stream, for its sender reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sent {
    /// The stream's SSRC.
    pub(crate) ssrc: u32,
    /// Packets and payload octets sent (RFC 3550 keeps both modulo 2^32).
    pub(crate) packets: u32,
    pub(crate) octets: u32,
    /// The stream's RTP time now, if it has sent anything.
    pub(crate) rtp_time: Option<u32>,
}

/// A reception report block (RFC 3550 §6.4.1) about one stream we receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReportBlock {
    /// The stream reported on.
    pub(crate) ssrc: u32,
    /// Lost since the last report, in 256ths.
    pub(crate) fraction_lost: u8,
    /// Lost since the stream began (24 bits, signed: duplicates can make it negative).
    pub(crate) cumulative_lost: i32,
    /// Highest sequence number received, with the rollover count above it.
    pub(crate) highest_seq: u32,
    /// Interarrival jitter, in RTP clock units.
    pub(crate) jitter: u32,
    /// The middle 32 bits of the NTP time of the peer's last sender report, 0 if none.
    pub(crate) last_sr: u32,
    /// Since then, in 1/65536 s; 0 if none.
    pub(crate) delay_since_last_sr: u32,
}

impl ReportBlock {
    fn write(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.ssrc.to_be_bytes());
        let lost = self
            .cumulative_lost
            .clamp(-0x80_0000, 0x7f_ffff)
            .to_be_bytes();
        out[4] = self.fraction_lost;
        out[5..8].copy_from_slice(&lost[1..]);
        out[8..12].copy_from_slice(&self.highest_seq.to_be_bytes());
        out[12..16].copy_from_slice(&self.jitter.to_be_bytes());
        out[16..20].copy_from_slice(&self.last_sr.to_be_bytes());
        out[20..24].copy_from_slice(&self.delay_since_last_sr.to_be_bytes());
    }
}

/// One packet of a compound: where it starts, its type, how long it is.
#[derive(Debug, Clone, Copy)]
struct Part {
    at: usize,
    pt: u8,
    len: usize,
}

impl Part {
    fn blocks_at(&self) -> Option<usize> {
        match self.pt {
            SR => Some(SR_BLOCKS_AT),
            RR => Some(RR_BLOCKS_AT),
            _ => None,
        }
    }
}

/// The packets of a compound RTCP packet, if it is one: version 2 throughout, lengths that add
/// up, reports long enough for the blocks they count.
fn parts(compound: &[u8]) -> Option<Vec<Part>> {
    let mut parts = Vec::new();
    let mut at = 0;
    while at < compound.len() {
        let header = compound.get(at..at + 4)?;
        if header[0] >> 6 != 2 {
            return None;
        }
        let len = 4 * (usize::from(u16::from_be_bytes([header[2], header[3]])) + 1);
        if at + len > compound.len() {
            return None;
        }
        let part = Part {
            at,
            pt: header[1],
            len,
        };
        if let Some(blocks_at) = part.blocks_at() {
            if blocks_at + BLOCK_LEN * usize::from(header[0] & 0x1f) > len {
                return None;
            }
        }
        parts.push(part);
        at += len;
    }
    Some(parts)
}

/// Corrects a compound RTCP packet str0m made for a leg on the fast paths (see the module
/// docs). `block` is asked for only when the compound carries a sender or receiver report: a
/// reception report block covers the interval since the last one that went out. Returns
/// whether the compound changed.
pub(crate) fn correct(
    compound: &mut Vec<u8>,
    sent: Option<&Sent>,
    block: impl FnOnce() -> Option<ReportBlock>,
) -> bool {
    let Some(parts) = parts(compound) else {
        return false;
    };
    let mut changed = false;
    if let Some(sent) = sent {
        for part in parts.iter().filter(|p| p.pt == SR) {
            let report = &mut compound[part.at..part.at + part.len];
            if u32_at(report, 4) != sent.ssrc {
                continue;
            }
            if let Some(rtp_time) = sent.rtp_time {
                report[16..20].copy_from_slice(&rtp_time.to_be_bytes());
            }
            let packets = u32_at(report, 20).wrapping_add(sent.packets);
            let octets = u32_at(report, 24).wrapping_add(sent.octets);
            report[20..24].copy_from_slice(&packets.to_be_bytes());
            report[24..28].copy_from_slice(&octets.to_be_bytes());
            changed = true;
        }
    }
    if !parts.iter().any(|p| p.blocks_at().is_some()) {
        return changed;
    }
    let Some(block) = block() else {
        return changed;
    };
    // str0m's own block about the stream (from packets it saw before the fast path took
    // over, or that the fast path left to it) is replaced: ours has seen everything.
    for part in &parts {
        let Some(blocks_at) = part.blocks_at() else {
            continue;
        };
        let count = usize::from(compound[part.at] & 0x1f);
        for i in 0..count {
            let at = part.at + blocks_at + i * BLOCK_LEN;
            if u32_at(compound, at) == block.ssrc {
                block.write(&mut compound[at..at + BLOCK_LEN]);
                return true;
            }
        }
    }
    // Otherwise the first report with room takes it, after its other blocks.
    let Some((part, blocks_at)) = parts.iter().find_map(|p| {
        let has_room = compound[p.at] & 0x1f < MAX_BLOCKS
            // Padding would have to move: no report str0m makes is padded.
            && compound[p.at] & 0x20 == 0;
        Some((p, p.blocks_at().filter(|_| has_room)?))
    }) else {
        return changed;
    };
    let count = compound[part.at] & 0x1f;
    let at = part.at + blocks_at + usize::from(count) * BLOCK_LEN;
    let mut bytes = [0; BLOCK_LEN];
    block.write(&mut bytes);
    compound.splice(at..at, bytes);
    compound[part.at] = (compound[part.at] & !0x1f) | (count + 1);
    let words = u16::try_from((part.len + BLOCK_LEN) / 4 - 1).unwrap_or(u16::MAX);
    compound[part.at + 2..part.at + 4].copy_from_slice(&words.to_be_bytes());
    true
}

/// The middle 32 bits of the NTP time in the sender report from `ssrc` that `compound`
/// carries, if it carries one: what a reception report block echoes as "last SR".
pub(crate) fn sender_report_time(compound: &[u8], ssrc: u32) -> Option<u32> {
    parts(compound)?
        .into_iter()
        .filter(|p| p.pt == SR)
        .find(|p| u32_at(compound, p.at + 4) == ssrc)
        .map(|p| u32_at(compound, p.at + 10))
}

/// Whether a datagram on a muxed port is RTCP: version 2, a packet type of RTCP's range
/// (RFC 5761 §4).
pub(crate) fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.len() >= 8 && datagram[0] >> 6 == 2 && (192..=223).contains(&datagram[1])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const OURS: u32 = 0x1111_1111;
    const THEIRS: u32 = 0x2222_2222;

    /// What str0m sends on a fast leg: a sender report that counts nothing, its CNAME, and an
    /// empty receiver report.
    fn str0m_compound() -> Vec<u8> {
        let mut c = vec![0x80, SR, 0, 6];
        c.extend_from_slice(&OURS.to_be_bytes());
        c.extend_from_slice(&[0xe0, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07]); // NTP
        c.extend_from_slice(&[0; 12]); // RTP time, packets, octets
        c.extend_from_slice(&[0x81, 202, 0, 2]);
        c.extend_from_slice(&OURS.to_be_bytes());
        c.extend_from_slice(&[1, 2, b'a', b'b']); // CNAME "ab", then the end of the list
        c.extend_from_slice(&[0x80, RR, 0, 1]);
        c.extend_from_slice(&OURS.to_be_bytes());
        c
    }

    fn block() -> ReportBlock {
        ReportBlock {
            ssrc: THEIRS,
            fraction_lost: 25,
            cumulative_lost: 40,
            highest_seq: 0x0001_0203,
            jitter: 96,
            last_sr: 0x0102_0304,
            delay_since_last_sr: 65_536,
        }
    }

    const SENT: Sent = Sent {
        ssrc: OURS,
        packets: 250,
        octets: 20_000,
        rtp_time: Some(480_000),
    };

    #[test]
    fn the_sender_report_counts_what_the_fast_path_sent() {
        let mut c = str0m_compound();
        assert!(correct(&mut c, Some(&SENT), || None));
        assert_eq!(c.len(), str0m_compound().len());
        assert_eq!(u32_at(&c, 16), 480_000);
        assert_eq!(u32_at(&c, 20), 250);
        assert_eq!(u32_at(&c, 24), 20_000);
        // The NTP time stays str0m's; another stream's report is not ours to change.
        assert_eq!(&c[8..16], &str0m_compound()[8..16]);
        let mut other = str0m_compound();
        let other_sent = Sent { ssrc: 7, ..SENT };
        assert!(!correct(&mut other, Some(&other_sent), || None));
        assert_eq!(other, str0m_compound());
    }

    #[test]
    fn the_block_goes_into_the_first_report_and_lengths_follow() {
        let mut c = str0m_compound();
        assert!(correct(&mut c, None, || Some(block())));
        assert_eq!(c.len(), str0m_compound().len() + BLOCK_LEN);
        let parts = parts(&c).expect("still a compound packet");
        assert_eq!(parts.len(), 3);
        assert_eq!(c[0] & 0x1f, 1, "the sender report counts one block");
        assert_eq!(parts[0].len, 28 + BLOCK_LEN);
        let b = &c[28..28 + BLOCK_LEN];
        assert_eq!(u32_at(b, 0), THEIRS);
        assert_eq!(b[4], 25);
        assert_eq!(&b[5..8], &[0, 0, 40]);
        assert_eq!(u32_at(b, 8), 0x0001_0203);
        assert_eq!(u32_at(b, 12), 96);
        assert_eq!(u32_at(b, 16), 0x0102_0304);
        assert_eq!(u32_at(b, 20), 65_536);

        // A second correction replaces the block rather than adding another.
        let mut again = c.clone();
        let newer = ReportBlock {
            fraction_lost: 0,
            ..block()
        };
        assert!(correct(&mut again, None, || Some(newer)));
        assert_eq!(again.len(), c.len());
        assert_eq!(again[28 + 4], 0);
    }

    #[test]
    fn a_receiver_report_alone_takes_the_block() {
        let mut c = vec![0x80, RR, 0, 1];
        c.extend_from_slice(&OURS.to_be_bytes());
        assert!(correct(&mut c, Some(&SENT), || Some(block())));
        assert_eq!(&c[..4], &[0x81, RR, 0, 7]);
        assert_eq!(u32_at(&c, 8), THEIRS);
    }

    #[test]
    fn losses_beyond_24_bits_are_clamped_and_duplicates_go_negative() {
        let mut bytes = [0; BLOCK_LEN];
        ReportBlock {
            cumulative_lost: 1 << 30,
            ..block()
        }
        .write(&mut bytes);
        assert_eq!(&bytes[5..8], &[0x7f, 0xff, 0xff]);
        ReportBlock {
            cumulative_lost: -2,
            ..block()
        }
        .write(&mut bytes);
        assert_eq!(&bytes[5..8], &[0xff, 0xff, 0xfe]);
    }

    #[test]
    fn what_does_not_parse_is_left_alone() {
        for broken in [
            vec![0x80, RR, 0, 5, 0, 0, 0, 1],       // longer than the datagram
            vec![0x40, RR, 0, 1, 0, 0, 0, 1],       // version 1
            vec![0x82, RR, 0, 1, 0, 0, 0, 1],       // two blocks counted, none there
            vec![0x80, RR, 0, 1, 0, 0, 0, 1, 0x80], // a stray byte after the report
        ] {
            let mut c = broken.clone();
            assert!(
                !correct(&mut c, Some(&SENT), || Some(block())),
                "{broken:?}"
            );
            assert_eq!(c, broken);
        }
        // Feedback without a report (a NACK, say) gets no block, and none is made for it.
        let nack = vec![0x81, 205, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 5, 0, 0];
        let mut c = nack.clone();
        assert!(!correct(&mut c, None, || panic!(
            "a block made for no report"
        )));
        assert_eq!(c, nack);
    }

    #[test]
    fn the_peers_sender_report_time_is_read() {
        let mut c = str0m_compound();
        c[4..8].copy_from_slice(&THEIRS.to_be_bytes());
        assert_eq!(sender_report_time(&c, THEIRS), Some(0x0203_0405));
        assert_eq!(sender_report_time(&c, OURS), None);
        assert_eq!(sender_report_time(&c[..10], THEIRS), None);
        assert!(is_rtcp(&c));
        assert!(!is_rtcp(&[0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]));
    }
}
