//! Receive quality of one incoming stream, for legs whose audio the fast receive path takes:
//! str0m never sees that audio, so its periodic ingress statistics (the source of
//! [`crate::CallEvent::Quality`] on its own path) say nothing about it. The same figures are
//! kept here, the way RFC 3550 defines them for receiver reports: the fraction of packets lost
//! since the last report (§6.4.1, Appendix A.3) and the interarrival jitter (Appendix A.8).
//! The same counts fill the reception report block of the leg's RTCP receiver reports
//! ([`crate::rtcp`]), which keep their own interval: str0m decides when those go out.

use std::time::{Duration, Instant};

use crate::rtcp::ReportBlock;

/// How often a report is due: as often as str0m's own statistics on the usual path.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// One stream's counts between reports.
#[derive(Debug)]
pub(crate) struct ReceiveQuality {
    clock_rate: f64,
    /// Arrival times are measured from here, in RTP clock units.
    epoch: Instant,
    /// The first packet's index (rollover counter above sequence number).
    base: Option<u64>,
    highest: u64,
    received: u64,
    /// Since the last quality report.
    reported: Interval,
    /// Since the last reception report block.
    blocked: Interval,
    /// The peer's last sender report: the middle of its NTP time, and when it came.
    last_sender_report: Option<(u32, Instant)>,
    /// The last packet's relative transit time (arrival minus RTP time), in clock units.
    transit: Option<u32>,
    /// In clock units, as RFC 3550 keeps it (smoothed by 1/16).
    jitter: f64,
    next_report: Instant,
}

/// What a report says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Report {
    /// Fraction of the packets expected since the last report that did not arrive (0.0–1.0);
    /// `None` when none were expected.
    pub(crate) loss: Option<f32>,
    /// Interarrival jitter, seconds.
    pub(crate) jitter: f64,
}

impl ReceiveQuality {
    pub(crate) fn new(now: Instant, clock_rate: u32) -> Self {
        Self {
            clock_rate: f64::from(clock_rate),
            epoch: now,
            base: None,
            highest: 0,
            received: 0,
            reported: Interval::default(),
            blocked: Interval::default(),
            last_sender_report: None,
            transit: None,
            jitter: 0.0,
            next_report: now + REPORT_INTERVAL,
        }
    }

    /// An authenticated packet, not a replay: its index and RTP time, and when it arrived.
    pub(crate) fn packet(&mut self, now: Instant, index: u64, rtp_time: u32) {
        match self.base {
            None => {
                self.base = Some(index);
                self.highest = index;
            }
            Some(_) => self.highest = self.highest.max(index),
        }
        self.received += 1;
        // RTP time wraps at 2^32: transit and its differences are taken modulo 2^32 too.
        let arrival = (now.duration_since(self.epoch).as_secs_f64() * self.clock_rate) as u64;
        let transit = (arrival as u32).wrapping_sub(rtp_time);
        if let Some(last) = self.transit {
            let d = f64::from((transit.wrapping_sub(last) as i32).unsigned_abs());
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.transit = Some(transit);
    }

    /// The report, once one is due (every [`REPORT_INTERVAL`]); it starts the next interval.
    pub(crate) fn report(&mut self, now: Instant) -> Option<Report> {
        if now < self.next_report {
            return None;
        }
        self.next_report = now + REPORT_INTERVAL;
        let expected = self.expected()?;
        let (expected_interval, lost_interval) = self.reported.next(expected, self.received);
        let loss = (expected_interval > 0).then(|| lost_interval as f32 / expected_interval as f32);
        Some(Report {
            loss,
            jitter: self.jitter / self.clock_rate,
        })
    }

    /// The peer's sender report came, with `ntp_middle` (the middle 32 bits of its NTP time).
    pub(crate) fn sender_report(&mut self, now: Instant, ntp_middle: u32) {
        self.last_sender_report = Some((ntp_middle, now));
    }

    /// The reception report block about stream `ssrc`, for a receiver report going out now;
    /// it starts the next block's interval. `None` before the first packet.
    pub(crate) fn report_block(&mut self, now: Instant, ssrc: u32) -> Option<ReportBlock> {
        let expected = self.expected()?;
        let (expected_interval, lost_interval) = self.blocked.next(expected, self.received);
        // In 256ths; none expected, none lost.
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |fraction| u8::try_from(fraction).unwrap_or(u8::MAX));
        let cumulative_lost = i64::try_from(expected).unwrap_or(i64::MAX)
            - i64::try_from(self.received).unwrap_or(i64::MAX);
        let (last_sr, delay_since_last_sr) = match self.last_sender_report {
            Some((ntp_middle, at)) => {
                let delay = now.saturating_duration_since(at).as_secs_f64() * 65_536.0;
                (ntp_middle, delay as u32)
            }
            None => (0, 0),
        };
        Some(ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: i32::try_from(cumulative_lost).unwrap_or(i32::MAX),
            // The index is the extended sequence number: rollovers above the sequence number.
            highest_seq: self.highest as u32,
            jitter: self.jitter as u32,
            last_sr,
            delay_since_last_sr,
        })
    }

    /// Packets expected so far (RFC 3550 A.3), once the first has come.
    fn expected(&self) -> Option<u64> {
        Some(self.highest - self.base? + 1)
    }
}

/// The counts at the start of a reporting interval.
#[derive(Debug, Default)]
struct Interval {
    expected_prior: u64,
    received_prior: u64,
}

impl Interval {
    /// Ends the interval at `expected` and `received`: how many were expected in it and how
    /// many of those were lost.
    fn next(&mut self, expected: u64, received: u64) -> (u64, u64) {
        let expected_interval = expected - self.expected_prior;
        let received_interval = received - self.received_prior;
        self.expected_prior = expected;
        self.received_prior = received;
        // Duplicates can make more arrive than were expected: that interval lost nothing.
        (
            expected_interval,
            expected_interval.saturating_sub(received_interval),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPUS: u32 = 48_000;
    const FRAME: Duration = Duration::from_millis(20);

    #[test]
    fn a_steady_stream_reports_no_loss_and_no_jitter_every_five_seconds() {
        let start = Instant::now();
        let mut quality = ReceiveQuality::new(start, OPUS);
        let mut reports = Vec::new();
        for i in 0..600u32 {
            let now = start + FRAME * i;
            quality.packet(now, 1000 + u64::from(i), 7 + 960 * i);
            reports.extend(quality.report(now));
        }
        assert_eq!(reports.len(), 2, "one per five seconds of twelve");
        for report in reports {
            assert_eq!(report.loss, Some(0.0));
            assert!(report.jitter < 1e-4, "{report:?}");
        }
    }

    #[test]
    fn loss_is_the_fraction_missing_since_the_last_report_and_jitter_follows_late_arrivals() {
        let start = Instant::now();
        let mut quality = ReceiveQuality::new(start, OPUS);
        let mut reports = Vec::new();
        // First interval: every tenth packet lost. Second: none lost, every other one 10 ms
        // late.
        for i in 0..500u32 {
            let mut now = start + FRAME * i;
            if i < 250 && i % 10 == 3 {
                continue;
            }
            if i >= 250 && i % 2 == 1 {
                now += Duration::from_millis(10);
            }
            quality.packet(now, u64::from(i), 960 * i);
            reports.extend(quality.report(now));
        }
        assert_eq!(reports.len(), 1);
        let first = reports[0];
        let loss = first.loss.expect("packets were expected");
        assert!((0.08..=0.12).contains(&loss), "{first:?}");
        assert!(first.jitter < 1e-3, "{first:?}");
        let second = quality
            .report(start + FRAME * 500)
            .expect("due ten seconds in");
        assert_eq!(second.loss, Some(0.0));
        // Each late packet is 10 ms off its neighbours: the estimate converges on 10 ms.
        assert!((0.008..=0.011).contains(&second.jitter), "{second:?}");
    }

    #[test]
    fn nothing_received_reports_nothing_expected() {
        let start = Instant::now();
        let mut quality = ReceiveQuality::new(start, OPUS);
        assert_eq!(quality.report(start + REPORT_INTERVAL), None);
    }

    /// The reception report block: its own interval, cumulative loss, the extended highest
    /// sequence number, and the peer's last sender report with the time since.
    #[test]
    fn the_report_block_counts_its_own_interval_and_echoes_the_last_sender_report() {
        let start = Instant::now();
        let mut quality = ReceiveQuality::new(start, OPUS);
        assert_eq!(quality.report_block(start, 9), None, "nothing received yet");
        // Across the sequence number's wrap, one packet in five lost.
        for i in 0..100u32 {
            if i % 5 == 0 {
                continue;
            }
            let now = start + FRAME * i;
            quality.packet(now, 0xffc0 + u64::from(i), 960 * i);
        }
        let now = start + FRAME * 100;
        // A quality report in between does not take the block's losses.
        assert!(quality.report(now + REPORT_INTERVAL).is_some());
        quality.sender_report(now, 0xabcd_0123);
        let block = quality
            .report_block(now + Duration::from_millis(500), 9)
            .expect("packets came");
        assert_eq!(block.ssrc, 9);
        assert_eq!(block.highest_seq, 0xffc0 + 99, "the wrap is counted");
        // 99 expected after the first that came (index 1), 20 of them lost.
        assert_eq!(block.cumulative_lost, 19);
        assert_eq!(block.fraction_lost, (19 * 256 / 99) as u8);
        assert!(block.jitter < 10, "{block:?}");
        assert_eq!(block.last_sr, 0xabcd_0123);
        assert_eq!(block.delay_since_last_sr, 32_768, "half a second");

        // The next block covers only what came since: nothing lost.
        quality.packet(now + FRAME, 0xffc0 + 100, 96_000);
        let next = quality.report_block(now + FRAME, 9).expect("block");
        assert_eq!(next.fraction_lost, 0);
        assert_eq!(next.cumulative_lost, 19);
    }
}
