//! Agents that answer a call's audio inside the engine, with no network of their own.
//!
//! - [`AgentKind::Echo`] returns the caller's audio after a delay: it proves two-way media on
//!   a real phone with no AI at all.
//! - [`AgentKind::Silence`] sends Opus silence frames: a steady outgoing stream for tests.
//!
//! - [`AgentKind::Model`] relays the caller's audio to a second WebRTC leg (the realtime
//!   model's) and the model's audio back, Opus as it comes, no transcoding. The engine owns the
//!   model leg; this agent only holds what cannot be sent yet: caller audio from before the model
//!   leg is up, and model audio from before the call is answered.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which agent answers a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentKind {
    /// Returns the caller's audio after `delay`.
    Echo {
        /// How long after hearing it the caller hears themselves.
        delay: Duration,
    },
    /// Sends silence.
    Silence,
    /// Relays to and from the call's model leg ([`crate::Engine::offer_model_leg`]).
    Model,
}

/// An Opus packet of 20 ms of silence (TOC 0xF8: CELT fullband 20 ms, one frame).
pub const OPUS_SILENCE: [u8; 3] = [0xf8, 0xff, 0xfe];

/// Opus runs at 48 kHz: one 20 ms frame advances the RTP clock by 960.
const FRAME_TICKS: u32 = 960;
const FRAME: Duration = Duration::from_millis(20);

/// A packet the agent wants sent to the caller: payload and RTP timestamp offset.
#[derive(Debug, Clone)]
pub(crate) struct AgentPacket {
    /// Timestamp in the agent's own timeline (the engine adds its random base).
    pub rtp_time: u32,
    pub payload: Arc<[u8]>,
}

/// Early packets kept at most while the agent is not started (10 s of 20 ms frames).
const MAX_EARLY: usize = 500;

#[derive(Debug)]
pub(crate) enum Agent {
    Echo {
        delay: Duration,
        /// (send at, rtp time relative to the first packet, payload)
        queue: VecDeque<(Instant, u32, Arc<[u8]>)>,
        first_rtp: Option<u32>,
    },
    Silence {
        next: Option<Instant>,
        rtp_time: u32,
    },
    Relay {
        /// Caller audio the model leg cannot take yet: (RTP time relative to the first caller
        /// packet, payload).
        to_model: VecDeque<(u32, Arc<[u8]>)>,
        first_caller: Option<u32>,
        /// Model audio the caller cannot take yet (the call is not answered).
        to_caller: VecDeque<(u32, Arc<[u8]>)>,
        first_model: Option<u32>,
    },
}

impl Agent {
    pub(crate) fn new(kind: AgentKind) -> Self {
        match kind {
            AgentKind::Echo { delay } => Agent::Echo {
                delay,
                queue: VecDeque::new(),
                first_rtp: None,
            },
            AgentKind::Silence => Agent::Silence {
                next: None,
                rtp_time: 0,
            },
            AgentKind::Model => Agent::Relay {
                to_model: VecDeque::new(),
                first_caller: None,
                to_caller: VecDeque::new(),
                first_model: None,
            },
        }
    }

    /// Caller audio (Opus), heard at `now`.
    pub(crate) fn caller_audio(&mut self, now: Instant, rtp_time: u32, payload: Arc<[u8]>) {
        match self {
            Agent::Echo {
                delay,
                queue,
                first_rtp,
            } => {
                let first = *first_rtp.get_or_insert(rtp_time);
                if queue.len() >= MAX_EARLY {
                    queue.pop_front();
                }
                queue.push_back((now + *delay, rtp_time.wrapping_sub(first), payload));
            }
            Agent::Relay {
                to_model,
                first_caller,
                ..
            } => push_bounded(to_model, first_caller, rtp_time, payload),
            Agent::Silence { .. } => {}
        }
    }

    /// Model audio (Opus) for the caller: held until [`Agent::poll`] (relay only).
    pub(crate) fn model_audio(&mut self, rtp_time: u32, payload: Arc<[u8]>) {
        if let Agent::Relay {
            to_caller,
            first_model,
            ..
        } = self
        {
            push_bounded(to_caller, first_model, rtp_time, payload);
        }
    }

    /// Caller audio waiting for the model leg, in order (relay only).
    pub(crate) fn take_for_model(&mut self, out: &mut Vec<AgentPacket>) {
        if let Agent::Relay { to_model, .. } = self {
            out.extend(
                to_model
                    .drain(..)
                    .map(|(rtp_time, payload)| AgentPacket { rtp_time, payload }),
            );
        }
    }

    /// Starts sending (the call was answered): caller audio heard before is replayed, with
    /// its spacing, from `now` on.
    pub(crate) fn start(&mut self, now: Instant) {
        match self {
            Agent::Echo { delay, queue, .. } => {
                if let Some(&(first_due, _, _)) = queue.front() {
                    if first_due < now + *delay {
                        let shift = (now + *delay) - first_due;
                        for (due, _, _) in queue.iter_mut() {
                            *due += shift;
                        }
                    }
                }
            }
            Agent::Silence { next, .. } => *next = Some(now),
            // Relayed audio goes out as it comes; what waited goes out at the next poll.
            Agent::Relay { .. } => {}
        }
    }

    /// What is due at `now`, to send to the caller.
    pub(crate) fn poll(&mut self, now: Instant, out: &mut Vec<AgentPacket>) {
        match self {
            Agent::Echo { queue, .. } => {
                while queue.front().is_some_and(|(due, _, _)| *due <= now) {
                    if let Some((_, rtp_time, payload)) = queue.pop_front() {
                        out.push(AgentPacket { rtp_time, payload });
                    }
                }
            }
            Agent::Silence { next, rtp_time } => {
                while let Some(due) = next.filter(|due| *due <= now) {
                    out.push(AgentPacket {
                        rtp_time: *rtp_time,
                        payload: Arc::from(OPUS_SILENCE.as_slice()),
                    });
                    *rtp_time = rtp_time.wrapping_add(FRAME_TICKS);
                    *next = Some(due + FRAME);
                }
            }
            Agent::Relay { to_caller, .. } => out.extend(
                to_caller
                    .drain(..)
                    .map(|(rtp_time, payload)| AgentPacket { rtp_time, payload }),
            ),
        }
    }

    /// When the agent next has something to send (only once started, for silence).
    pub(crate) fn next_due(&self) -> Option<Instant> {
        match self {
            Agent::Echo { queue, .. } => queue.front().map(|(due, _, _)| *due),
            Agent::Silence { next, .. } => *next,
            Agent::Relay { .. } => None,
        }
    }
}

/// Queues a packet with its RTP time relative to the stream's first, dropping the oldest
/// beyond [`MAX_EARLY`].
fn push_bounded(
    queue: &mut VecDeque<(u32, Arc<[u8]>)>,
    first: &mut Option<u32>,
    rtp_time: u32,
    payload: Arc<[u8]>,
) {
    let first = *first.get_or_insert(rtp_time);
    if queue.len() >= MAX_EARLY {
        queue.pop_front();
    }
    queue.push_back((rtp_time.wrapping_sub(first), payload));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_returns_audio_after_the_delay_with_its_timing() {
        let t0 = Instant::now();
        let mut agent = Agent::new(AgentKind::Echo {
            delay: Duration::from_millis(500),
        });
        agent.start(t0);
        for i in 0..3u32 {
            agent.caller_audio(
                t0 + FRAME * i,
                5000 + i * 960,
                Arc::from([i as u8].as_slice()),
            );
        }
        let mut out = Vec::new();
        agent.poll(t0 + Duration::from_millis(499), &mut out);
        assert!(out.is_empty());
        agent.poll(t0 + Duration::from_millis(520), &mut out);
        assert_eq!(out.iter().map(|p| p.rtp_time).collect::<Vec<_>>(), [0, 960]);
        assert_eq!(agent.next_due(), Some(t0 + Duration::from_millis(540)));
    }

    #[test]
    fn early_audio_is_kept_and_replayed_once_started() {
        let t0 = Instant::now();
        let mut agent = Agent::new(AgentKind::Echo {
            delay: Duration::from_millis(100),
        });
        for i in 0..50u32 {
            agent.caller_audio(t0 + FRAME * i, i * 960, Arc::from([0u8].as_slice()));
        }
        // Answered two seconds later: nothing heard early is lost.
        let start = t0 + Duration::from_secs(2);
        agent.start(start);
        let mut out = Vec::new();
        agent.poll(start + Duration::from_millis(99), &mut out);
        assert!(out.is_empty(), "the replay keeps the delay");
        agent.poll(start + Duration::from_secs(5), &mut out);
        assert_eq!(out.len(), 50);
    }

    #[test]
    fn the_relay_keeps_both_directions_until_they_can_be_sent() {
        let t0 = Instant::now();
        let mut agent = Agent::new(AgentKind::Model);
        for i in 0..3u32 {
            agent.caller_audio(t0, 7000 + i * 960, Arc::from([i as u8].as_slice()));
        }
        agent.model_audio(100, Arc::from([9u8].as_slice()));
        agent.model_audio(100 + 960, Arc::from([10u8].as_slice()));
        let mut out = Vec::new();
        agent.take_for_model(&mut out);
        assert_eq!(
            out.iter().map(|p| p.rtp_time).collect::<Vec<_>>(),
            [0, 960, 1920]
        );
        out.clear();
        agent.poll(t0, &mut out);
        assert_eq!(out.iter().map(|p| p.rtp_time).collect::<Vec<_>>(), [0, 960]);
        assert_eq!(&*out[1].payload, &[10]);
        assert_eq!(agent.next_due(), None, "a relay has no timer of its own");
    }

    #[test]
    fn silence_is_a_steady_twenty_millisecond_stream() {
        let t0 = Instant::now();
        let mut agent = Agent::new(AgentKind::Silence);
        assert_eq!(
            agent.next_due(),
            None,
            "nothing before the call is answered"
        );
        agent.start(t0);
        let mut out = Vec::new();
        agent.poll(t0 + Duration::from_millis(100), &mut out);
        assert_eq!(out.len(), 6);
        assert_eq!(out[5].rtp_time, 5 * 960);
        assert_eq!(&*out[0].payload, &OPUS_SILENCE);
    }
}
