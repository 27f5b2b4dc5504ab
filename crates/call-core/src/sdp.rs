//! Text changes to session descriptions that str0m has no knob for, kept in one place.
//!
//! WhatsApp's offers are ice-lite with `a=setup:actpass`; WhatsApp needs the answerer to take
//! the active DTLS role, and str0m answers an `actpass` offer as passive. Rewriting the offer's
//! `actpass` to `passive` before str0m reads it makes str0m take the active role and write
//! `a=setup:active` in the answer; WhatsApp's view of its own offer is unchanged
//! (`shared/reference/webrtc-stack.md` §3.2, verified there and in our tests).

/// The offer as str0m should read it: CRLF line endings (some relays and the Go precedent's
/// payloads had bare `\n`, or literal `\r\n` sequences), `a=setup:actpass` read as `passive`
/// so that we become the DTLS client, and only SHA-256 fingerprints (Pipecat strips the
/// others; str0m verifies the one it understands).
pub fn prepare_whatsapp_offer(offer: &str) -> String {
    prepare(offer, true)
}

/// A browser's offer as str0m should read it: line endings and fingerprints as for WhatsApp,
/// `a=setup:actpass` left alone (str0m then answers `passive` and the browser is the DTLS
/// client, as browsers expect of a full-ICE answerer).
pub fn prepare_browser_offer(offer: &str) -> String {
    prepare(offer, false)
}

fn prepare(offer: &str, actpass_as_passive: bool) -> String {
    let text = normalise(offer);
    let mut out = String::with_capacity(text.len() + 8);
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if actpass_as_passive && line.eq_ignore_ascii_case("a=setup:actpass") {
            out.push_str("a=setup:passive");
        } else if let Some(rest) = line.strip_prefix("a=fingerprint:") {
            if !rest.to_ascii_lowercase().starts_with("sha-256 ") {
                continue;
            }
            out.push_str(line);
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out
}

/// Line endings as RFC 8866 wants them (`\r\n`), accepting bare `\n` and the literal two-
/// character escapes `\r\n` / `\n` that JSON-in-JSON payloads have produced.
pub fn normalise(sdp: &str) -> String {
    let unescaped = if sdp.contains("\\r\\n") || (sdp.contains("\\n") && !sdp.contains('\n')) {
        sdp.replace("\\r\\n", "\n").replace("\\n", "\n")
    } else {
        sdp.to_owned()
    };
    let mut out = String::with_capacity(unescaped.len() + 16);
    for line in unescaped.trim().lines() {
        out.push_str(line.trim_end_matches('\r'));
        out.push_str("\r\n");
    }
    out
}

/// Adds Opus format parameters str0m does not model to the answer's `a=fmtp:<pt>` line, so
/// the answer states the same audio limits WhatsApp offered (str0m keeps only the parameters
/// it understands). Parameters already present are left alone.
pub fn add_opus_params(answer: &str, pt: u8, params: &[(&str, String)]) -> String {
    let prefix = format!("a=fmtp:{pt} ");
    let mut out = String::with_capacity(answer.len() + 64);
    for line in answer.split("\r\n") {
        if let Some(existing) = line.strip_prefix(&prefix) {
            out.push_str(line);
            for (key, value) in params {
                let present = existing
                    .split(';')
                    .any(|kv| kv.split('=').next().is_some_and(|k| k.trim() == *key));
                if !present {
                    out.push_str(&format!(";{key}={value}"));
                }
            }
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    // `split` leaves one empty piece after the final CRLF.
    out.truncate(out.trim_end_matches("\r\n").len());
    out.push_str("\r\n");
    out
}

/// The value of the offer's Opus `a=fmtp` parameter `key`, if any.
pub fn fmtp_param(sdp: &str, pt: u8, key: &str) -> Option<String> {
    let prefix = format!("a=fmtp:{pt} ");
    sdp.lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix(&prefix))
        .flat_map(|params| params.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k.trim() == key).then(|| v.trim().to_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actpass_is_read_as_passive_and_only_sha256_fingerprints_are_kept() {
        let offer =
            "v=0\na=fingerprint:sha-512 AA:BB\na=fingerprint:sha-256 CC:DD\na=setup:actpass\n";
        let prepared = prepare_whatsapp_offer(offer);
        assert_eq!(
            prepared,
            "v=0\r\na=fingerprint:sha-256 CC:DD\r\na=setup:passive\r\n"
        );
    }

    #[test]
    fn a_browser_offer_keeps_actpass() {
        let offer = "v=0\na=fingerprint:sha-384 AA\na=fingerprint:sha-256 CC:DD\na=setup:actpass\n";
        assert_eq!(
            prepare_browser_offer(offer),
            "v=0\r\na=fingerprint:sha-256 CC:DD\r\na=setup:actpass\r\n"
        );
    }

    #[test]
    fn escaped_line_breaks_are_unescaped() {
        assert_eq!(
            normalise("v=0\\r\\no=- 1 2 IN IP4 0.0.0.0\\r\\n"),
            "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\n"
        );
        assert_eq!(normalise("v=0\\ns=-"), "v=0\r\ns=-\r\n");
    }

    #[test]
    fn opus_params_are_added_once() {
        let answer =
            "v=0\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:111 opus/48000/2\r\n";
        let out = add_opus_params(
            answer,
            111,
            &[
                ("maxaveragebitrate", "20000".into()),
                ("useinbandfec", "1".into()),
            ],
        );
        assert_eq!(
            out,
            "v=0\r\na=fmtp:111 minptime=10;useinbandfec=1;maxaveragebitrate=20000\r\na=rtpmap:111 opus/48000/2\r\n"
        );
    }

    #[test]
    fn fmtp_params_are_read() {
        let sdp = "a=fmtp:111 maxaveragebitrate=20000;maxplaybackrate=16000;minptime=20\r\n";
        assert_eq!(
            fmtp_param(sdp, 111, "maxplaybackrate").as_deref(),
            Some("16000")
        );
        assert_eq!(fmtp_param(sdp, 111, "stereo"), None);
    }
}
