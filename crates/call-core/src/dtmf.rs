//! DTMF key presses arriving in-band as RFC 4733 telephone-events.
//!
//! One key press is a run of packets with the same RTP timestamp (the start of the tone),
//! repeated while the key is held and three times at the end. We report a key once, on the
//! first packet of its run, and never forward these packets as audio.

/// A telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// The key: `0`–`9`, `*`, `#`, `A`–`D`.
    pub key: char,
    /// The end bit: the key was released.
    pub end: bool,
    /// Duration so far, in RTP clock units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the 4-byte payload; `None` for anything that is not a DTMF key event.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let [event, flags, d1, d2, ..] = *payload else {
            return None;
        };
        let key = match event {
            0..=9 => char::from(b'0' + event),
            10 => '*',
            11 => '#',
            12..=15 => char::from(b'A' + (event - 12)),
            _ => return None,
        };
        Some(Self {
            key,
            end: flags & 0x80 != 0,
            duration: u16::from_be_bytes([d1, d2]),
        })
    }

    /// The payload of this event (volume 10 dBm0), as a phone would send it.
    pub fn to_bytes(self) -> [u8; 4] {
        let event = match self.key {
            '0'..='9' => self.key as u8 - b'0',
            '*' => 10,
            '#' => 11,
            'A'..='D' => self.key as u8 - b'A' + 12,
            _ => 0,
        };
        let d = self.duration.to_be_bytes();
        [event, if self.end { 0x80 | 10 } else { 10 }, d[0], d[1]]
    }
}

/// Turns a stream of telephone-event packets into key presses, each once.
#[derive(Debug, Default)]
pub struct DtmfDetector {
    last_timestamp: Option<u32>,
}

impl DtmfDetector {
    /// Feeds one packet (its RTP timestamp and payload); returns the key when it starts a new
    /// press.
    pub fn packet(&mut self, rtp_timestamp: u32, payload: &[u8]) -> Option<char> {
        let event = TelephoneEvent::parse(payload)?;
        if self.last_timestamp == Some(rtp_timestamp) {
            return None;
        }
        self.last_timestamp = Some(rtp_timestamp);
        Some(event.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_round_trip() {
        for key in "0123456789*#ABCD".chars() {
            let event = TelephoneEvent {
                key,
                end: false,
                duration: 160,
            };
            assert_eq!(TelephoneEvent::parse(&event.to_bytes()), Some(event));
        }
        assert_eq!(
            TelephoneEvent::parse(&[16, 0, 0, 0]),
            None,
            "not a DTMF key"
        );
        assert_eq!(TelephoneEvent::parse(&[1, 0]), None, "too short");
    }

    #[test]
    fn a_key_press_is_reported_once_however_many_packets_it_takes() {
        let mut detector = DtmfDetector::default();
        let five = |duration, end| {
            TelephoneEvent {
                key: '5',
                end,
                duration,
            }
            .to_bytes()
        };
        assert_eq!(detector.packet(1000, &five(160, false)), Some('5'));
        assert_eq!(detector.packet(1000, &five(320, false)), None);
        assert_eq!(detector.packet(1000, &five(480, true)), None);
        assert_eq!(detector.packet(1000, &five(480, true)), None);
        assert_eq!(
            detector.packet(9000, &five(160, false)),
            Some('5'),
            "pressed again"
        );
    }
}
