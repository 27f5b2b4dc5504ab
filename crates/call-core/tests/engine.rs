//! The engine against WhatsApp-like peers on a simulated network (virtual clock, in memory).
// Tests pick the events they look for; a new variant cannot be missed here.
#![allow(clippy::wildcard_enum_match_arm)]

mod sim;

use std::time::Duration;

use call_core::dtmf::TelephoneEvent;
use call_core::{AgentKind, CallError, CallEvent, CallHandle, EndReason, EngineConfig};
use sim::{Sim, WHATSAPP_FMTP};

const ECHO: AgentKind = AgentKind::Echo {
    delay: Duration::from_millis(200),
};

fn payload(i: usize) -> Vec<u8> {
    // Distinct, Opus-sized payloads so the echo can be checked byte for byte.
    let mut p = vec![0xfc, (i % 256) as u8, (i / 256) as u8];
    p.extend(std::iter::repeat_n(0x55, 60));
    p
}

/// A real WhatsApp offer, as logged in production (CRLF lines).
fn recorded_whatsapp_offer() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../bridge/tests/fixtures/sdp/whatsapp_offer.sdp"
    ))
    .expect("fixture")
}

#[test]
fn the_answer_to_a_whatsapp_offer_is_active_full_ice_with_whatsapps_audio() {
    let offer = recorded_whatsapp_offer();
    let mut sim = Sim::with_config(|mut c| {
        c.public = Some("203.0.113.9:40000".parse().expect("addr"));
        c
    });
    let (_, answer) = sim
        .engine
        .accept_offer(sim.now, &offer, ECHO)
        .expect("the recorded WhatsApp offer is accepted");
    assert!(
        answer.contains("a=setup:active"),
        "we are the DTLS client:\n{answer}"
    );
    assert!(
        !answer.contains("a=ice-lite"),
        "we are a full ICE agent:\n{answer}"
    );
    assert!(answer.contains("a=rtpmap:111 opus/48000/2"), "{answer}");
    assert!(
        answer.contains("a=rtpmap:126 telephone-event/8000"),
        "{answer}"
    );
    assert!(
        answer.contains("maxaveragebitrate=20000"),
        "WhatsApp's limits are stated back:\n{answer}"
    );
    assert!(answer.contains("a=sendrecv"), "{answer}");
    assert!(answer.contains("typ host"), "{answer}");
    assert!(
        answer.contains("203.0.113.9 40000 typ srflx"),
        "non-trickle, public address included:\n{answer}"
    );
    assert!(answer.contains("a=fingerprint:sha-256"), "{answer}");
    assert_eq!(sim.engine.active_calls(), 1);
}

#[test]
fn audio_header_extensions_keep_the_offers_ids_and_transport_wide_cc_is_declined() {
    // The shape the Pion anchor's callers (and older WhatsApp notes) use: ids 1, 3 and 5.
    let offer = recorded_whatsapp_offer().replace(
        "a=mid:audio\r\n",
        "a=mid:audio\r\n\
         a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
         a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
         a=extmap:5 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n",
    );
    assert!(offer.contains("a=extmap:5"), "the fixture has CRLF lines");
    let mut sim = Sim::new();
    let (_, answer) = sim
        .engine
        .accept_offer(sim.now, &offer, ECHO)
        .expect("accepted");
    assert!(
        answer.contains("a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
        "{answer}"
    );
    assert!(
        answer.contains("a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
        "{answer}"
    );
    assert!(
        !answer.contains("transport-wide-cc"),
        "no per-packet send history for an estimator we do not run:\n{answer}"
    );
}

#[test]
fn broken_offers_are_refused_and_leave_nothing_behind() {
    let mut sim = Sim::new();
    for offer in [
        // What Meta's docs and fixtures put where the SDP goes.
        "<<RFC 8866 SDP>>",
        "",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\n",
    ] {
        let err = sim.engine.accept_offer(sim.now, offer, ECHO).expect_err(offer);
        assert!(matches!(err, CallError::BadSdp(_) | CallError::NoAudio), "{offer:?}: {err:?}");
    }
    assert_eq!(sim.engine.active_calls(), 0);
}

fn an_inbound_call_connects_and_the_echo_agent_returns_the_callers_audio(sim: &mut Sim) {
    let p = sim.add_peer("157.240.19.130:3480");
    let offer = sim.peers[p].offer();
    assert!(offer.contains("a=ice-lite"));
    assert!(offer.contains(WHATSAPP_FMTP));
    let call = sim.inbound_call_from_offer(p, &offer);
    sim.run_until(Duration::from_secs(2), |s| {
        s.peers[p].connected && s.events_of(call).contains(&&CallEvent::Connected)
    });

    sim.engine.start_media(sim.now, call).expect("call exists");
    sim.drain_engine();
    sim.talk(p, 50, payload);
    sim.run_for(Duration::from_millis(400));

    let echoed: Vec<Vec<u8>> = sim.peers[p]
        .received
        .iter()
        .map(|(_, p)| p.clone())
        .collect();
    assert_eq!(echoed.len(), 50, "every packet came back");
    assert_eq!(
        echoed,
        (0..50).map(payload).collect::<Vec<_>>(),
        "in order, unchanged"
    );
    let times: Vec<u32> = sim.peers[p].received.iter().map(|(t, _)| *t).collect();
    assert!(
        times.windows(2).all(|w| w[1].wrapping_sub(w[0]) == 960),
        "our own timeline keeps 20 ms spacing"
    );
    assert!(sim.events_of(call).contains(&&CallEvent::MediaStarted));
    // The header extensions the answer negotiated are on our packets, whichever path sent
    // them: the mid from the first packet (so a bundled peer can bind our SSRC), the send
    // time on every one.
    let peer = &sim.peers[p];
    let mid = peer.mid.expect("negotiated");
    let negotiated = peer.rtc.media(mid).expect("audio").remote_extmap();
    assert!(negotiated.id_of(str0m::rtp::Extension::RtpMid).is_some());
    assert!(negotiated
        .id_of(str0m::rtp::Extension::AbsoluteSendTime)
        .is_some());
    let extensions = &peer.received_extensions;
    assert!(extensions[0].0, "the first packet names its mid");
    assert!(
        extensions.iter().all(|&(_, send_time)| send_time),
        "every packet has its send time: {extensions:?}"
    );
}

fn audio_heard_before_the_call_is_answered_is_kept_not_dropped(sim: &mut Sim) {
    let p = sim.add_peer("157.240.19.130:3480");
    let call = sim.inbound_call(p, ECHO);
    sim.run_until(Duration::from_secs(2), |s| s.peers[p].connected);
    // Media flows after pre_accept; the agent only starts after accept.
    sim.talk(p, 20, payload);
    assert!(
        sim.peers[p].received.is_empty(),
        "the agent is quiet before the call is answered"
    );
    sim.engine.start_media(sim.now, call).expect("call exists");
    sim.drain_engine();
    sim.run_for(Duration::from_millis(800));
    assert_eq!(sim.peers[p].received.len(), 20);
}

fn dtmf_is_reported_once_per_key_and_never_echoed(sim: &mut Sim) {
    let p = sim.add_peer("157.240.19.130:3480");
    let call = sim.inbound_call(p, ECHO);
    sim.run_until(Duration::from_secs(2), |s| s.peers[p].connected);
    sim.engine.start_media(sim.now, call).expect("call exists");
    sim.drain_engine();
    for (key, start) in [('1', 8000u32), ('#', 16000)] {
        for duration in [160u16, 320, 480, 480] {
            let event = TelephoneEvent {
                key,
                end: duration == 480,
                duration,
            };
            let now = sim.now;
            sim.peers[p].send(now, 126, Some(start), &event.to_bytes());
            sim.drain_peer(p);
            sim.run_for(Duration::from_millis(20));
        }
    }
    sim.run_for(Duration::from_millis(500));
    let keys: Vec<char> = sim
        .events_of(call)
        .into_iter()
        .filter_map(|e| match e {
            CallEvent::Dtmf(k) => Some(*k),
            _ => None,
        })
        .collect();
    assert_eq!(keys, ['1', '#']);
    assert!(
        sim.peers[p].received.is_empty(),
        "telephone-events are not audio"
    );
}

#[test]
fn an_outbound_call_rings_is_answered_and_sends_the_agents_audio() {
    let mut sim = Sim::new();
    let p = sim.add_peer("157.240.19.131:3482");
    let (call, offer) = sim
        .engine
        .create_offer(sim.now, AgentKind::Silence)
        .expect("offer");
    sim.drain_engine();
    assert!(offer.contains("a=setup:actpass"));
    assert!(offer.contains("a=rtpmap:111 opus/48000/2"));
    assert!(offer.contains("a=rtpmap:126 telephone-event/8000"));
    // The phone rings for a while; then the answer arrives in a connect webhook.
    sim.run_for(Duration::from_secs(5));
    assert!(sim.ended(call).is_none());
    let answer = sim.peers[p].answer(&offer);
    sim.drain_peer(p);
    sim.engine
        .accept_answer(sim.now, call, &answer)
        .expect("answer applies");
    sim.drain_engine();
    sim.run_until(Duration::from_secs(2), |s| s.peers[p].connected);
    sim.engine.start_media(sim.now, call).expect("call exists");
    sim.drain_engine();
    sim.talk(p, 25, payload);
    assert!(
        sim.peers[p].received.len() >= 20,
        "got {}",
        sim.peers[p].received.len()
    );
    assert!(sim.peers[p]
        .received
        .iter()
        .all(|(_, p)| p == &call_core::agent::OPUS_SILENCE));

    sim.engine.hang_up(sim.now, call, EndReason::HungUp);
    sim.drain_engine();
    assert_eq!(sim.ended(call), Some(EndReason::HungUp));
    sim.run_for(Duration::from_millis(100));
    assert!(sim.peers[p].closed, "the callee's side saw the DTLS close");
    assert_eq!(sim.engine.active_calls(), 0);
    let Some(CallEvent::Ended { stats, .. }) = sim.events_of(call).into_iter().last() else {
        panic!("ended last")
    };
    assert_eq!(stats.packets_in, 25);
    assert!(stats.packets_out >= 20);
}

#[test]
fn an_answer_for_a_call_that_is_not_waiting_is_refused() {
    let mut sim = Sim::new();
    let p = sim.add_peer("157.240.19.130:3480");
    let inbound = sim.inbound_call(p, ECHO);
    let err = sim
        .engine
        .accept_answer(sim.now, inbound, "v=0\r\n")
        .expect_err("no offer pending");
    assert!(matches!(err, CallError::WrongState(_)), "{err:?}");
    let (outbound, _) = sim.engine.create_offer(sim.now, ECHO).expect("offer");
    let err = sim
        .engine
        .accept_answer(sim.now, outbound, "<<RFC 8866 SDP>>")
        .expect_err("garbage");
    assert!(matches!(err, CallError::BadSdp(_)), "{err:?}");
}

#[test]
fn nobody_answering_an_outbound_call_ends_it_at_the_ring_timeout() {
    let mut sim = Sim::with_config(|mut c| {
        c.ring_timeout = Duration::from_secs(30);
        c
    });
    let (call, _) = sim.engine.create_offer(sim.now, ECHO).expect("offer");
    sim.drain_engine();
    sim.run_for(Duration::from_secs(29));
    assert_eq!(sim.ended(call), None);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.ended(call), Some(EndReason::NotAnswered));
    assert_eq!(sim.engine.active_calls(), 0);
}

#[test]
fn a_call_whose_media_never_connects_ends_as_failed() {
    let mut sim = Sim::with_config(|mut c| {
        c.connect_timeout = Duration::from_secs(10);
        c
    });
    let p = sim.add_peer("157.240.19.130:3480");
    sim.peers[p].deaf = true;
    let call = sim.inbound_call(p, ECHO);
    sim.run_for(Duration::from_secs(9));
    assert_eq!(sim.ended(call), None);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.ended(call), Some(EndReason::Failed));
}

#[test]
fn a_call_whose_audio_stops_ends_at_the_media_timeout_and_no_call_outlives_the_maximum() {
    let mut sim = Sim::with_config(|mut c| {
        c.media_timeout = Duration::from_secs(5);
        c.max_call_length = Duration::from_secs(30);
        c
    });
    let p = sim.add_peer("157.240.19.130:3480");
    let q = sim.add_peer("157.240.19.140:3490");
    let quiet = sim.inbound_call(p, ECHO);
    let long = sim.inbound_call(q, ECHO);
    sim.run_until(Duration::from_secs(2), |s| {
        s.peers[p].connected && s.peers[q].connected
    });
    // q keeps talking for 40 s; p says nothing.
    for _ in 0..40 {
        sim.talk(q, 50, payload);
    }
    assert_eq!(sim.ended(quiet), Some(EndReason::TimedOut));
    assert_eq!(sim.ended(long), Some(EndReason::TimedOut));
    let ended_at = |call| {
        sim.events
            .iter()
            .find(|(_, c, e)| *c == call && matches!(e, CallEvent::Ended { .. }))
            .map(|(t, ..)| *t)
            .expect("ended")
    };
    assert!(ended_at(quiet) < ended_at(long));
}

#[test]
fn two_calls_share_the_engine_socket_and_each_hears_only_itself() {
    let mut sim = Sim::new();
    let a = sim.add_peer("157.240.19.130:3480");
    let b = sim.add_peer("157.240.19.130:3481");
    let call_a = sim.inbound_call(a, ECHO);
    let call_b = sim.inbound_call(b, ECHO);
    sim.run_until(Duration::from_secs(2), |s| {
        s.peers[a].connected && s.peers[b].connected
    });
    for call in [call_a, call_b] {
        sim.engine.start_media(sim.now, call).expect("call exists");
        sim.drain_engine();
    }
    for i in 0..20 {
        let now = sim.now;
        sim.peers[a].send(now, 111, None, &[0xaa, i]);
        sim.drain_peer(a);
        sim.peers[b].send(now, 111, None, &[0xbb, i]);
        sim.drain_peer(b);
        sim.run_for(Duration::from_millis(20));
    }
    sim.run_for(Duration::from_millis(500));
    assert_eq!(sim.peers[a].received.len(), 20);
    assert_eq!(sim.peers[b].received.len(), 20);
    assert!(sim.peers[a].received.iter().all(|(_, p)| p[0] == 0xaa));
    assert!(sim.peers[b].received.iter().all(|(_, p)| p[0] == 0xbb));
}

#[test]
fn datagrams_from_strangers_are_not_taken() {
    let mut sim = Sim::new();
    let p = sim.add_peer("157.240.19.130:3480");
    sim.inbound_call(p, ECHO);
    let stranger = "198.51.100.7:5000".parse().expect("addr");
    assert!(!sim.engine.handle_receive(sim.now, stranger, b"hello"));
    assert!(!sim.engine.handle_receive(
        sim.now,
        stranger,
        &[0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    ));
    assert!(!sim.engine.handle_receive(sim.now, stranger, &[]));
}

// --- the model leg ---------------------------------------------------------------------------

const OPENAI: &str = "13.65.240.10:3478";

fn model_events(sim: &Sim, call: CallHandle) -> Vec<CallEvent> {
    sim.events_of(call)
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                CallEvent::ModelConnected
                    | CallEvent::ModelChannelOpen
                    | CallEvent::ModelMessage(_)
                    | CallEvent::ModelAudioStarted
                    | CallEvent::ModelEnded { .. }
            )
        })
        .cloned()
        .collect()
}

/// An inbound call answered by the model: the WhatsApp peer, the call, the model peer.
fn call_with_model(sim: &mut Sim) -> (usize, CallHandle, usize) {
    let p = sim.add_peer("157.240.19.130:3480");
    let call = sim.inbound_call(p, AgentKind::Model);
    sim.run_until(Duration::from_secs(2), |s| s.peers[p].connected);
    // The caller speaks before the model leg exists: nothing of it may be lost.
    sim.talk(p, 5, payload);
    let m = sim.add_model_leg(call, OPENAI);
    sim.run_until(Duration::from_secs(3), |s| {
        model_events(s, call).contains(&CallEvent::ModelChannelOpen)
    });
    (p, call, m)
}

fn the_model_leg_gets_the_callers_audio_including_what_came_before_it_was_up(sim: &mut Sim) {
    let (p, call, m) = call_with_model(sim);
    assert!(sim.peers[m].connected);
    assert_eq!(
        model_events(sim, call)[..2],
        [CallEvent::ModelConnected, CallEvent::ModelChannelOpen]
    );
    sim.talk(p, 5, |i| payload(i + 5));
    sim.run_for(Duration::from_millis(100));
    let heard: Vec<Vec<u8>> = sim.peers[m]
        .received
        .iter()
        .map(|(_, p)| p.clone())
        .collect();
    assert_eq!(
        heard,
        (0..10).map(payload).collect::<Vec<_>>(),
        "all of it, in order"
    );
    let times: Vec<u32> = sim.peers[m].received.iter().map(|(t, _)| *t).collect();
    assert!(
        times.windows(2).all(|w| w[1].wrapping_sub(w[0]) == 960),
        "the caller's timing is kept on the model leg's own timeline"
    );
    // Key presses are the bridge's business, not the model's.
    let before = sim.peers[m].received.len();
    let now = sim.now;
    sim.peers[p].send(now, 126, Some(5000), &[1, 0x8a, 0, 160]);
    sim.drain_peer(p);
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.peers[m].received.len(), before);
}

fn the_models_audio_reaches_the_caller_once_the_call_is_answered(sim: &mut Sim) {
    let (p, call, m) = call_with_model(sim);
    // Said before the call is answered (an outbound call still ringing): held, not played.
    for i in 0..3 {
        let now = sim.now;
        sim.peers[m].send(now, 111, None, &payload(100 + i));
        sim.drain_peer(m);
        sim.run_for(Duration::from_millis(20));
    }
    assert!(model_events(sim, call).contains(&CallEvent::ModelAudioStarted));
    assert!(
        sim.peers[p].received.is_empty(),
        "nothing plays into a call not answered"
    );
    sim.engine.start_media(sim.now, call).expect("call exists");
    sim.drain_engine();
    sim.run_for(Duration::from_millis(50));
    sim.talk(m, 2, |i| payload(103 + i));
    sim.run_for(Duration::from_millis(50));
    let heard: Vec<Vec<u8>> = sim.peers[p]
        .received
        .iter()
        .map(|(_, p)| p.clone())
        .collect();
    assert_eq!(heard, (100..105).map(payload).collect::<Vec<_>>());
}

#[test]
fn events_travel_both_ways_on_the_models_channel() {
    let mut sim = Sim::new();
    let (_p, call, m) = call_with_model(&mut sim);
    sim.engine
        .send_model_message(sim.now, call, r#"{"type":"response.create"}"#)
        .expect("sent");
    sim.drain_engine();
    sim.run_for(Duration::from_millis(50));
    assert_eq!(sim.peers[m].messages, [r#"{"type":"response.create"}"#]);

    sim.peers[m].send_message(r#"{"type":"session.created"}"#);
    sim.drain_peer(m);
    sim.run_for(Duration::from_millis(50));
    assert!(model_events(&sim, call).contains(&CallEvent::ModelMessage(
        r#"{"type":"session.created"}"#.to_owned()
    )));
}

#[test]
fn losing_the_model_leg_leaves_the_call_up_and_a_new_one_can_replace_it() {
    let mut sim = Sim::new();
    let (p, call, m) = call_with_model(&mut sim);
    sim.engine.start_media(sim.now, call).expect("call exists");
    sim.drain_engine();
    // The model's side goes away.
    sim.peers[m].rtc.close().expect("close");
    sim.drain_peer(m);
    sim.talk(p, 5, payload);
    assert!(model_events(&sim, call).contains(&CallEvent::ModelEnded {
        reason: EndReason::Completed
    }));
    assert!(sim.engine.has_call(call), "the call goes on");
    assert_eq!(sim.engine.active_calls(), 1);

    // The caller keeps talking while the new leg comes up; the new leg hears it.
    sim.talk(p, 3, |i| payload(50 + i));
    let m2 = sim.add_model_leg(call, "13.65.240.11:3478");
    sim.run_until(Duration::from_secs(3), |s| s.peers[m2].channel.is_some());
    sim.run_for(Duration::from_millis(50));
    let heard: Vec<Vec<u8>> = sim.peers[m2]
        .received
        .iter()
        .map(|(_, p)| p.clone())
        .collect();
    assert!(
        heard.ends_with(&(50..53).map(payload).collect::<Vec<_>>()),
        "the audio said between the legs reaches the new one"
    );

    // Ending the call ends its model leg, and the call's end is the last word.
    sim.engine.hang_up(sim.now, call, EndReason::HungUp);
    sim.drain_engine();
    sim.run_for(Duration::from_millis(100));
    assert!(sim.peers[m2].closed, "the model leg was closed politely");
    assert_eq!(sim.ended(call), Some(EndReason::HungUp));
    assert!(matches!(
        sim.events_of(call).last(),
        Some(CallEvent::Ended { .. })
    ));
    assert_eq!(sim.engine.active_calls(), 0);
}

#[test]
fn a_model_leg_that_never_connects_fails_alone_and_one_can_be_dropped() {
    let mut sim = Sim::with_config(|c| EngineConfig {
        connect_timeout: Duration::from_secs(5),
        media_timeout: Duration::from_secs(60),
        ..c
    });
    let p = sim.add_peer("157.240.19.130:3480");
    let call = sim.inbound_call(p, AgentKind::Model);
    // Offered, never answered (the HTTP exchange hangs).
    sim.engine.offer_model_leg(sim.now, call).expect("offered");
    sim.drain_engine();
    assert!(
        matches!(
            sim.engine.offer_model_leg(sim.now, call),
            Err(CallError::WrongState(_))
        ),
        "one model leg at a time"
    );
    sim.run_for(Duration::from_secs(6));
    assert_eq!(
        model_events(&sim, call),
        [CallEvent::ModelEnded {
            reason: EndReason::Failed
        }]
    );
    assert!(sim.engine.has_call(call));

    sim.engine
        .offer_model_leg(sim.now, call)
        .expect("offered again");
    sim.engine.drop_model_leg(sim.now, call, EndReason::HungUp);
    sim.drain_engine();
    assert_eq!(
        model_events(&sim, call).last(),
        Some(&CallEvent::ModelEnded {
            reason: EndReason::HungUp
        })
    );
    assert!(sim.engine.has_call(call));

    // Only a call answered by the model can have a model leg.
    let other = sim.add_peer("157.240.19.131:3480");
    let echo = sim.inbound_call(other, ECHO);
    assert!(matches!(
        sim.engine.offer_model_leg(sim.now, echo),
        Err(CallError::WrongState(_))
    ));
}

fn sdp_fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../bridge/tests/fixtures/sdp/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

/// The browser test phone's offers: Chromium's (recorded from Debian's Chromium 156: Opus 111,
/// RED, G722, PCMU/A, two telephone-events, TWCC, tcp candidates) and Firefox's shape (Opus
/// 109, telephone-event 101, session-level fingerprint, a `recvonly` extmap, written after
/// Firefox's offers). Both are full ICE with `actpass`: we answer as the controlled,
/// passive (DTLS server) side, in the browser's payload types, bundled, never ice-lite.
#[test]
fn browser_offers_get_a_passive_full_ice_answer_in_the_browsers_payload_types() {
    for (fixture, opus, tele) in [
        ("chromium_offer.sdp", 111, "126 telephone-event/8000"),
        ("firefox_offer.sdp", 109, "101 telephone-event/8000"),
    ] {
        let offer = sdp_fixture(fixture);
        let mut sim = Sim::new();
        let (call, answer) = sim
            .engine
            .accept_browser_offer(sim.now, &offer, ECHO)
            .unwrap_or_else(|e| panic!("{fixture}: {e}"));
        assert!(answer.contains("a=setup:passive"), "{fixture}: {answer}");
        assert!(!answer.contains("a=ice-lite"), "{fixture}: {answer}");
        assert!(answer.contains("a=group:BUNDLE 0"), "{fixture}: {answer}");
        assert!(
            answer.contains(&format!("a=rtpmap:{opus} opus/48000/2")),
            "{fixture}: {answer}"
        );
        assert!(
            answer.contains(&format!("a=rtpmap:{tele}")),
            "{fixture}: {answer}"
        );
        for refused in ["G722", "PCMU", "red/"] {
            assert!(!answer.contains(refused), "{fixture}: {answer}");
        }
        assert!(answer.contains("typ host"), "{fixture}: {answer}");
        assert!(sim.engine.has_call(call));

        // The same offer read as WhatsApp's would make us the DTLS client: the difference is
        // only how `actpass` is read.
        let (_, as_whatsapp) = sim
            .engine
            .accept_offer(sim.now, &offer, ECHO)
            .expect("answers");
        assert!(as_whatsapp.contains("a=setup:active"), "{fixture}");
    }
}

#[test]
fn a_browser_offer_without_audio_is_refused_and_nothing_is_kept() {
    let offer = sdp_fixture("chromium_offer.sdp").replace("m=audio", "m=video");
    let mut sim = Sim::new();
    let err = sim
        .engine
        .accept_browser_offer(sim.now, &offer, ECHO)
        .expect_err("no audio");
    assert!(matches!(err, CallError::NoAudio), "{err}");
    assert_eq!(sim.engine.active_calls(), 0);
}

/// An answered echo call from a WhatsApp-like peer whose `packets` packets of 20 ms lose one in
/// ten on the way (the rest are echoed); returns the peer and the call.
fn a_call_losing_one_packet_in_ten(sim: &mut Sim, packets: usize) -> (usize, CallHandle) {
    let p = sim.add_peer("157.240.19.130:3480");
    let call = sim.inbound_call(p, ECHO);
    sim.run_until(Duration::from_secs(2), |s| {
        s.peers[p].connected && s.events_of(call).contains(&&CallEvent::Connected)
    });
    sim.engine.start_media(sim.now, call).expect("call exists");
    sim.drain_engine();
    for i in 0..packets {
        if i % 10 == 5 {
            sim.peers[p].lose_one();
            sim.run_for(Duration::from_millis(20));
        } else {
            sim.talk(p, 1, payload);
        }
    }
    (p, call)
}

/// The call's receive quality is reported every 5 s, from what really arrived: here one packet
/// in ten is lost on the way.
fn receive_quality_is_reported_from_what_arrived(sim: &mut Sim) {
    let (_, call) = a_call_losing_one_packet_in_ten(sim, 400);
    let reports: Vec<(Option<f32>, f64)> = sim
        .events_of(call)
        .into_iter()
        .filter_map(|e| match e {
            CallEvent::Quality { loss, jitter } => Some((*loss, *jitter)),
            _ => None,
        })
        .collect();
    assert!(!reports.is_empty(), "8 s of audio, no quality report");
    let (loss, jitter) = *reports.last().expect("a report");
    let loss = loss.expect("packets were expected");
    assert!(
        (0.05..=0.15).contains(&loss),
        "one in ten lost: {reports:?}"
    );
    assert!(
        jitter < 0.005,
        "the virtual network is punctual: {reports:?}"
    );
}

/// The peer's own WebRTC stack reads our RTCP reports as the truth about the call, whichever
/// path carried the audio: our sender reports count what we sent it, our receiver reports
/// count what it sent us and what was lost on the way, and echo its sender reports so that it
/// can measure the round trip. (On the fast paths str0m never sees the audio; the engine
/// corrects its reports.)
fn the_peer_hears_true_reports_of_the_audio_both_ways(sim: &mut Sim) {
    let (p, _) = a_call_losing_one_packet_in_ten(sim, 600);
    sim.run_for(Duration::from_secs(1));
    let peer = &sim.peers[p];

    let egress = peer.egress.last().expect("the peer keeps statistics");
    let heard = egress
        .remote
        .as_ref()
        .expect("our receiver reports reached the peer");
    // 60 of 600 lost; the last report is up to 5 s old.
    assert!(
        (20..=60).contains(&heard.packets_lost),
        "lost as we reported: {egress:?}"
    );
    // The peer's sequence numbers start above 1000.
    assert!(
        *heard.maximum_sequence_number > 1400,
        "highest sequence number: {egress:?}"
    );
    let rtt = egress.rtt.expect("a round trip from our reception reports");
    assert!(
        (Duration::from_millis(9)..Duration::from_millis(15)).contains(&rtt),
        "the network's round trip is 10 ms (the reports count in 1/65536 s): {rtt:?}"
    );

    let ingress = peer.ingress.last().expect("the peer keeps statistics");
    let told = ingress
        .remote
        .as_ref()
        .expect("our sender reports reached the peer");
    let sent = sim.engine.totals().packets_out;
    assert!(
        told.packets * 10 >= ingress.packets * 6 && told.packets <= sent,
        "we said we sent {} packets; the peer got {}, we sent {sent}",
        told.packets,
        ingress.packets
    );
    assert!(told.bytes >= told.packets * 60, "{ingress:?}");
}

/// The scenarios that carry audio run three times: through str0m, with the engine's own
/// receive path (`fast_receive`), and with its own send path too (`fast_send`). They must
/// behave the same, and the fast paths must really be taken.
mod both_receive_paths {
    use super::*;

    fn slow(scenario: fn(&mut Sim)) {
        let mut sim = Sim::new();
        scenario(&mut sim);
        assert_eq!(sim.engine.totals().packets_in_fast, 0);
        assert_eq!(sim.engine.totals().packets_out_fast, 0);
    }

    fn fast(scenario: fn(&mut Sim)) {
        let mut sim = Sim::fast(false);
        scenario(&mut sim);
        let totals = sim.engine.totals();
        assert!(totals.packets_in_fast > 0, "the fast path was taken");
        // Audio and the model's audio are counted in packets_in; key presses are not.
        assert!(totals.packets_in_fast >= totals.packets_in);
        assert_eq!(totals.packets_out_fast, 0);
    }

    fn fast_both_ways(scenario: fn(&mut Sim)) {
        let mut sim = Sim::fast(true);
        scenario(&mut sim);
        let totals = sim.engine.totals();
        assert!(totals.packets_in_fast >= totals.packets_in);
        // Everything sent (to the user and to the model) went out the fast way; the str0m
        // peers decrypted it, or the scenario's own checks would have failed.
        assert_eq!(totals.packets_out_fast, totals.packets_out);
    }

    macro_rules! on_both {
        ($($scenario:ident),* $(,)?) => {
            $(
                mod $scenario {
                    #[test]
                    fn through_str0m() {
                        super::slow(super::super::$scenario);
                    }
                    #[test]
                    fn through_the_fast_path() {
                        super::fast(super::super::$scenario);
                    }
                    #[test]
                    fn through_the_fast_path_both_ways() {
                        super::fast_both_ways(super::super::$scenario);
                    }
                }
            )*
        };
    }

    on_both!(
        an_inbound_call_connects_and_the_echo_agent_returns_the_callers_audio,
        audio_heard_before_the_call_is_answered_is_kept_not_dropped,
        dtmf_is_reported_once_per_key_and_never_echoed,
        the_model_leg_gets_the_callers_audio_including_what_came_before_it_was_up,
        the_models_audio_reaches_the_caller_once_the_call_is_answered,
        receive_quality_is_reported_from_what_arrived,
        the_peer_hears_true_reports_of_the_audio_both_ways,
    );
}
