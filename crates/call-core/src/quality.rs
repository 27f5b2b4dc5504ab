//! Receive quality of one incoming stream, for legs whose audio the fast receive path takes:
//! str0m never sees that audio, so its periodic ingress statistics (the source of
//! [`crate::CallEvent::Quality`] on its own path) say nothing about it. The same figures are
//! kept here, the way RFC 3550 defines them for receiver reports: the fraction of packets lost
//! since the last report (§6.4.1, Appendix A.3) and the interarrival jitter (Appendix A.8).

use std::time::{Duration, Instant};

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
    expected_prior: u64,
    received_prior: u64,
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
            expected_prior: 0,
            received_prior: 0,
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
        let base = self.base?;
        let expected = self.highest - base + 1;
        let expected_interval = expected - self.expected_prior;
        let received_interval = self.received - self.received_prior;
        self.expected_prior = expected;
        self.received_prior = self.received;
        // Duplicates can make more arrive than were expected: that interval lost nothing.
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let loss = (expected_interval > 0).then(|| lost_interval as f32 / expected_interval as f32);
        Some(Report {
            loss,
            jitter: self.jitter / self.clock_rate,
        })
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
}
