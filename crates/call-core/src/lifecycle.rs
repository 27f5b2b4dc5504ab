//! The call lifecycle: which signal moves a call to which state.
//!
//! A call only moves forward: `offered`/`dialing` → `ringing` → `answered` → `ended`. A signal
//! that would move it backwards (an `ACCEPTED` status delivered after the `terminate` webhook,
//! a redelivered `connect`) is [`Transition::Stale`] and must change nothing. `ended` is final.
//!
//! Meta's ordering guarantees are weak (statuses "can arrive out of order", redeliveries are
//! normal), and in a multi-instance deployment two instances may see signals for the same call,
//! so the store applies a transition only if the state it read is still the state in the row.

use std::fmt;
use std::str::FromStr;

/// Who started the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallDirection {
    /// The WhatsApp user called the business (user-initiated, "UIC").
    Inbound,
    /// The business called the user (business-initiated, "BIC").
    Outbound,
}

impl CallDirection {
    /// The stable lower-case name stored in the database and used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            CallDirection::Inbound => "inbound",
            CallDirection::Outbound => "outbound",
        }
    }
}

impl fmt::Display for CallDirection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CallDirection {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "inbound" => Ok(CallDirection::Inbound),
            "outbound" => Ok(CallDirection::Outbound),
            other => Err(UnknownName(other.to_owned())),
        }
    }
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndReason {
    /// WhatsApp reported the call as completed (someone hung up after it was answered).
    Completed,
    /// WhatsApp reported the call as failed.
    Failed,
    /// The callee rejected a business-initiated call.
    Rejected,
    /// The call ended before anyone answered (missed, cancelled by the caller).
    NotAnswered,
    /// We hung up (operator, assistant `end_call`, shutdown).
    HungUp,
    /// We refused to take the call (capacity, broken offer, no agent).
    RefusedByUs,
    /// A timer ended it (no media, ring timeout, maximum length).
    TimedOut,
}

impl EndReason {
    /// The stable lower-case name stored in the database and used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Completed => "completed",
            EndReason::Failed => "failed",
            EndReason::Rejected => "rejected",
            EndReason::NotAnswered => "not_answered",
            EndReason::HungUp => "hung_up",
            EndReason::RefusedByUs => "refused",
            EndReason::TimedOut => "timed_out",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EndReason {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "completed" => EndReason::Completed,
            "failed" => EndReason::Failed,
            "rejected" => EndReason::Rejected,
            "not_answered" => EndReason::NotAnswered,
            "hung_up" => EndReason::HungUp,
            "refused" => EndReason::RefusedByUs,
            "timed_out" => EndReason::TimedOut,
            other => return Err(UnknownName(other.to_owned())),
        })
    }
}

/// Where a call is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallState {
    /// An inbound call whose `connect` (with the caller's SDP offer) we received.
    Offered,
    /// An outbound call we asked WhatsApp to place; no status yet.
    Dialing,
    /// The callee's phone is ringing (outbound `RINGING` status).
    Ringing,
    /// The call was answered: by us (inbound accept) or by the callee (outbound answer).
    Answered,
    /// The call is over. Final.
    Ended(EndReason),
}

impl CallState {
    /// The stable lower-case name stored in the database (`ended` for every end reason).
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Offered => "offered",
            CallState::Dialing => "dialing",
            CallState::Ringing => "ringing",
            CallState::Answered => "answered",
            CallState::Ended(_) => "ended",
        }
    }

    /// Whether the call is over.
    pub fn is_ended(self) -> bool {
        matches!(self, CallState::Ended(_))
    }

    /// Position in the forward-only order; a signal may only raise it.
    fn rank(self) -> u8 {
        match self {
            CallState::Offered | CallState::Dialing => 0,
            CallState::Ringing => 1,
            CallState::Answered => 2,
            CallState::Ended(_) => 3,
        }
    }

    /// Rebuilds a state from its stored name and, for `ended`, the stored end reason.
    pub fn from_parts(state: &str, end_reason: Option<&str>) -> Result<Self, UnknownName> {
        Ok(match state {
            "offered" => CallState::Offered,
            "dialing" => CallState::Dialing,
            "ringing" => CallState::Ringing,
            "answered" => CallState::Answered,
            "ended" => CallState::Ended(
                end_reason
                    .ok_or_else(|| UnknownName("ended without end reason".to_owned()))?
                    .parse()?,
            ),
            other => return Err(UnknownName(other.to_owned())),
        })
    }

    /// The state a call starts in when it is first seen through `signal`.
    ///
    /// A call can be first seen through any signal (its `connect` may have been lost or be
    /// still in flight), so every signal names a starting state.
    pub fn initial(direction: CallDirection, signal: CallSignal) -> CallState {
        let start = match direction {
            CallDirection::Inbound => CallState::Offered,
            CallDirection::Outbound => CallState::Dialing,
        };
        match start.apply(signal) {
            Transition::To(next) => next,
            Transition::Stale => start,
        }
    }

    /// Decides what `signal` does to a call in this state.
    pub fn apply(self, signal: CallSignal) -> Transition {
        let next = match signal {
            CallSignal::Offer => CallState::Offered,
            CallSignal::Ringing => CallState::Ringing,
            CallSignal::Answered => CallState::Answered,
            CallSignal::Rejected => CallState::Ended(EndReason::Rejected),
            CallSignal::Ended(reason) => {
                // A call that ends before it was answered was not answered, whatever status
                // WhatsApp puts on the terminate (it says COMPLETED for a missed call too).
                let reason = match (self, reason) {
                    (CallState::Answered, reason) => reason,
                    (_, EndReason::Completed) => EndReason::NotAnswered,
                    (_, reason) => reason,
                };
                CallState::Ended(reason)
            }
        };
        if next.rank() > self.rank() {
            Transition::To(next)
        } else {
            Transition::Stale
        }
    }
}

impl fmt::Display for CallState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallState::Ended(reason) => write!(f, "ended ({reason})"),
            other @ (CallState::Offered
            | CallState::Dialing
            | CallState::Ringing
            | CallState::Answered) => f.write_str(other.as_str()),
        }
    }
}

/// Something that happened to a call, from signalling or from us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallSignal {
    /// The caller's offer arrived (inbound `connect`).
    Offer,
    /// The callee's phone rings (`RINGING`).
    Ringing,
    /// The call was answered (`ACCEPTED`, outbound answer `connect`, our inbound accept).
    Answered,
    /// The callee declined (`REJECTED`).
    Rejected,
    /// The call is over (`terminate`, our hang-up, a timer).
    Ended(EndReason),
}

/// The result of applying a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Move the call to this state.
    To(CallState),
    /// The signal is a redelivery or arrived after a later one: change nothing.
    Stale,
}

/// A stored name that none of the known values has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName(pub String);

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown name {:?}", self.0)
    }
}

impl std::error::Error for UnknownName {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_inbound_call_is_answered_then_completed() {
        let state = CallState::initial(CallDirection::Inbound, CallSignal::Offer);
        assert_eq!(state, CallState::Offered);
        let Transition::To(state) = state.apply(CallSignal::Answered) else {
            panic!("answer must move an offered call")
        };
        assert_eq!(
            state.apply(CallSignal::Ended(EndReason::Completed)),
            Transition::To(CallState::Ended(EndReason::Completed))
        );
    }

    #[test]
    fn a_terminate_before_answer_means_not_answered() {
        let state = CallState::Ringing;
        assert_eq!(
            state.apply(CallSignal::Ended(EndReason::Completed)),
            Transition::To(CallState::Ended(EndReason::NotAnswered))
        );
    }

    #[test]
    fn an_accepted_status_after_terminate_is_stale() {
        let ended = CallState::Ended(EndReason::Completed);
        assert_eq!(ended.apply(CallSignal::Answered), Transition::Stale);
        assert_eq!(ended.apply(CallSignal::Ringing), Transition::Stale);
    }

    #[test]
    fn a_call_first_seen_through_terminate_starts_ended() {
        let state = CallState::initial(
            CallDirection::Outbound,
            CallSignal::Ended(EndReason::Failed),
        );
        assert_eq!(state, CallState::Ended(EndReason::Failed));
    }

    #[test]
    fn stored_names_round_trip() {
        for state in [
            CallState::Offered,
            CallState::Dialing,
            CallState::Ringing,
            CallState::Answered,
            CallState::Ended(EndReason::Rejected),
        ] {
            let reason = match state {
                CallState::Ended(r) => Some(r.as_str()),
                CallState::Offered
                | CallState::Dialing
                | CallState::Ringing
                | CallState::Answered => None,
            };
            assert_eq!(CallState::from_parts(state.as_str(), reason), Ok(state));
        }
        assert!(CallState::from_parts("ended", None).is_err());
        assert!(CallState::from_parts("bogus", None).is_err());
    }

    fn any_signal() -> impl Strategy<Value = CallSignal> {
        prop_oneof![
            Just(CallSignal::Offer),
            Just(CallSignal::Ringing),
            Just(CallSignal::Answered),
            Just(CallSignal::Rejected),
            Just(CallSignal::Ended(EndReason::Completed)),
            Just(CallSignal::Ended(EndReason::Failed)),
            Just(CallSignal::Ended(EndReason::HungUp)),
        ]
    }

    proptest! {
        /// Whatever order signals arrive in, a call never moves backwards and never leaves
        /// `ended`.
        #[test]
        fn any_signal_sequence_only_moves_forward(
            outbound in any::<bool>(),
            signals in proptest::collection::vec(any_signal(), 1..12),
        ) {
            let direction = if outbound { CallDirection::Outbound } else { CallDirection::Inbound };
            let mut state = CallState::initial(direction, signals[0]);
            for signal in &signals[1..] {
                match state.apply(*signal) {
                    Transition::To(next) => {
                        prop_assert!(next.rank() > state.rank());
                        prop_assert!(!state.is_ended());
                        state = next;
                    }
                    Transition::Stale => {}
                }
            }
        }
    }
}
