//! SRTP keys for a relay fast path, taken from str0m through its crypto provider.
//!
//! Why: the anchor's CPU target and 300 full calls on two cores both need audio forwarded
//! without str0m's whole RTP path (docs/performance.md, "Where the CPU goes beside Pion").
//! str0m keeps the SRTP keys it derives from DTLS to itself, but its crypto provider is
//! pluggable (`RtcConfig::set_crypto_provider`), and the key derivation of RFC 3711 §4.3 runs
//! through it: every round is one AES block encryption keyed with a direction's *master key*,
//! of the *master salt* with the label in byte 7 and the round number in the last two bytes.
//!
//! [`tapping_provider`] wraps the default provider and lets everything through unchanged; on
//! the way it notes each new master key with the input of its first round (label 0, "RTP
//! encryption", so the input *is* the salt), and the profile whose cipher factory str0m asks
//! for next. The notes are kept per thread, because an `Rtc` derives its keys synchronously
//! inside the `poll_output` that handles the end of the DTLS handshake: the caller takes them
//! ([`take_leg_keys`]) right after polling the `Rtc` it is interested in.
//!
//! [`SrtpStream`] is one direction of a leg, built from those keys: it derives the session keys
//! as str0m does and protects or unprotects RTP with the provider's own ciphers, for every
//! profile DTLS can settle on: AEAD AES-128-GCM and AES-256-GCM (RFC 7714), and AES-128 in
//! counter mode with an 80-bit HMAC-SHA1 tag (RFC 3711).
//!
//! [`SrtpReceiver`] is the receiving half of a fast path: a leg's incoming RTP decrypted here,
//! with the rollover counter and replay window str0m would keep, so str0m's receive path is
//! skipped. Tests check that the keys taken here decrypt what str0m sends and that str0m accepts
//! what is encrypted here.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use str0m::crypto::{
    AeadAes128Gcm, AeadAes128GcmCipher, AeadAes256GcmCipher, Aes128CmSha1_80, CryptoError,
    CryptoProvider, SrtpProvider, SupportedAeadAes128Gcm, SupportedAeadAes256Gcm,
    SupportedAes128CmSha1_80,
};

/// The SRTP protection profiles DTLS can settle on (RFC 5764, RFC 7714).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpProfile {
    /// `SRTP_AES128_CM_HMAC_SHA1_80`.
    Aes128CmSha1_80,
    /// `SRTP_AEAD_AES_128_GCM`.
    AeadAes128Gcm,
    /// `SRTP_AEAD_AES_256_GCM`.
    AeadAes256Gcm,
}

impl SrtpProfile {
    /// The master key's length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Self::Aes128CmSha1_80 | Self::AeadAes128Gcm => 16,
            Self::AeadAes256Gcm => 32,
        }
    }

    /// The master salt's length in bytes.
    pub fn salt_len(self) -> usize {
        match self {
            Self::Aes128CmSha1_80 => 14,
            Self::AeadAes128Gcm | Self::AeadAes256Gcm => 12,
        }
    }
}

/// One direction's master key and salt, as str0m derived its session keys from them.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpMaster {
    /// The profile DTLS settled on.
    pub profile: SrtpProfile,
    key: Vec<u8>,
    salt: Vec<u8>,
}

impl SrtpMaster {
    /// A direction's master key and salt for `profile`; `None` when their lengths are not the
    /// profile's. The engine takes them from DTLS; this is for keys from elsewhere (tests,
    /// `examples/srtp_cost.rs`).
    pub fn new(profile: SrtpProfile, key: &[u8], salt: &[u8]) -> Option<Self> {
        (key.len() == profile.key_len() && salt.len() == profile.salt_len()).then(|| Self {
            profile,
            key: key.to_vec(),
            salt: salt.to_vec(),
        })
    }
}

// Keys stay out of logs.
impl std::fmt::Debug for SrtpMaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpMaster")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

/// A leg's keys: what it receives with and what it sends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegKeys {
    /// The keys the peer sends with.
    pub receive: SrtpMaster,
    /// The keys we send with.
    pub send: SrtpMaster,
}

/// A crypto provider for `RtcConfig::set_crypto_provider`: [`crate::crypto::provider`], with
/// the key derivation noted on the way (see the module docs). One for the whole process.
pub fn tapping_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let inner = crate::crypto::base();
            let tap: &'static KeyTap = Box::leak(Box::new(KeyTap {
                inner: inner.srtp_provider,
            }));
            Arc::new(CryptoProvider {
                srtp_provider: tap,
                ..inner
            })
        })
        .clone()
}

/// The keys of the `Rtc` polled last on this thread, when that poll set them up (once per
/// leg, when DTLS completes). `None` otherwise; noted keys are taken either way.
pub fn take_leg_keys() -> Option<LegKeys> {
    let noted = NOTED.with(|noted| std::mem::take(&mut *noted.borrow_mut()));
    // str0m sets up its receive context first, then its send context (`Session::
    // set_keying_material`); each derives from its own master key.
    let [receive, send]: [Noted; 2] = noted.try_into().ok()?;
    Some(LegKeys {
        receive: receive.finish()?,
        send: send.finish()?,
    })
}

thread_local! {
    static NOTED: RefCell<Vec<Noted>> = const { RefCell::new(Vec::new()) };
}

/// A master key seen in a derivation round, before the profile is known.
struct Noted {
    key: Vec<u8>,
    first_input: [u8; 16],
    profile: Option<SrtpProfile>,
}

impl Noted {
    fn finish(self) -> Option<SrtpMaster> {
        let profile = self.profile?;
        if self.key.len() != profile.key_len() {
            return None;
        }
        Some(SrtpMaster {
            profile,
            key: self.key,
            salt: self.first_input[..profile.salt_len()].to_vec(),
        })
    }
}

#[derive(Debug)]
struct KeyTap {
    inner: &'static dyn SrtpProvider,
}

impl KeyTap {
    fn note_round(key: &[u8], input: &[u8]) {
        let Ok(first_input) = <[u8; 16]>::try_from(input) else {
            return;
        };
        NOTED.with(|noted| {
            let mut noted = noted.borrow_mut();
            // A derivation runs several rounds and labels with one key: note the key once, at
            // its first round (label 0, round 0), whose input is the salt itself.
            if noted.last().is_some_and(|last| last.key == key) {
                return;
            }
            // Keys noted by an `Rtc` whose poll nobody took them from: start afresh.
            if noted.len() >= 2 {
                noted.clear();
            }
            noted.push(Noted {
                key: key.to_vec(),
                first_input,
                profile: None,
            });
        });
    }

    fn note_profile(profile: SrtpProfile) {
        NOTED.with(|noted| {
            for entry in noted.borrow_mut().iter_mut() {
                entry.profile.get_or_insert(profile);
            }
        });
    }
}

impl SrtpProvider for KeyTap {
    fn aes_128_cm_sha1_80(&self) -> &'static dyn SupportedAes128CmSha1_80 {
        Self::note_profile(SrtpProfile::Aes128CmSha1_80);
        self.inner.aes_128_cm_sha1_80()
    }

    fn aead_aes_128_gcm(&self) -> &'static dyn SupportedAeadAes128Gcm {
        Self::note_profile(SrtpProfile::AeadAes128Gcm);
        self.inner.aead_aes_128_gcm()
    }

    fn aead_aes_256_gcm(&self) -> &'static dyn SupportedAeadAes256Gcm {
        Self::note_profile(SrtpProfile::AeadAes256Gcm);
        self.inner.aead_aes_256_gcm()
    }

    fn srtp_aes_128_ecb_round(&self, key: &[u8], input: &[u8], output: &mut [u8]) {
        Self::note_round(key, input);
        self.inner.srtp_aes_128_ecb_round(key, input, output);
    }

    fn srtp_aes_256_ecb_round(&self, key: &[u8], input: &[u8], output: &mut [u8]) {
        Self::note_round(key, input);
        self.inner.srtp_aes_256_ecb_round(key, input, output);
    }
}

/// Why SRTP could not be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SrtpError {
    /// Too short, or not RTP version 2.
    #[error("not an RTP packet")]
    NotRtp,
    /// Too short to be SRTCP, or sent in the clear.
    #[error("not an encrypted RTCP packet")]
    NotRtcp,
    /// Wrong key, wrong rollover counter, or altered on the way.
    #[error("the packet does not authenticate")]
    Authentication,
}

/// One direction of a leg's RTP protection.
pub struct SrtpStream {
    cipher: Cipher,
}

enum Cipher {
    /// RFC 7714: AES-GCM, the session salt in the nonce, the header as associated data.
    Gcm { salt: [u8; 12], cipher: Gcm },
    /// RFC 3711: AES in counter mode, then an 80-bit HMAC-SHA1 tag over header, encrypted
    /// payload and rollover counter.
    CmSha1 { salt: [u8; 14], cipher: Box<CmSha1> },
}

/// AES-128 in counter mode and HMAC-SHA1, their keys expanded once for the stream.
///
/// Why not str0m's provider, as for AES-GCM: its aws-lc-rs cipher for this profile expands the
/// AES key, and its HMAC the authentication key, on every packet, which made a packet cost four
/// times one under AES-GCM (`examples/srtp_cost.rs`). These are the same aws-lc primitives,
/// keyed once; str0m's RFC 3711 helpers (`Aes128CmSha1_80::rtp_iv`, `rtp_hmac`, ...) still lay
/// out the IVs and tags. Checked against RFC 3711's key stream and RFC 2202's HMAC here, and
/// against libsrtp in the aiortc call on this profile.
struct CmSha1 {
    ctr: EncryptingKey,
    auth: hmac::Key,
}

impl CmSha1 {
    fn new(key: &[u8; 16], auth_key: &[u8; Aes128CmSha1_80::HMAC_KEY_LEN]) -> Self {
        let ctr = UnboundCipherKey::new(&AES_128, key)
            .and_then(EncryptingKey::ctr)
            .expect("a 16-byte key is an AES-128 key");
        Self {
            ctr,
            auth: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth_key),
        }
    }

    /// `output` = `input` under the key stream from `iv` (counter mode is its own inverse).
    fn apply(&self, iv: [u8; 16], input: &[u8], output: &mut [u8]) -> Result<(), CryptoError> {
        let output = output
            .get_mut(..input.len())
            .ok_or_else(|| CryptoError::Other("AES-CM output too short".into()))?;
        output.copy_from_slice(input);
        self.ctr
            .less_safe_encrypt(output, EncryptionContext::Iv128(FixedLength::from(iv)))
            .map(drop)
            .map_err(|_| CryptoError::Other("AES-CM failed".into()))
    }

    /// The HMAC-SHA1 of `parts`, in the shape str0m's RFC 3711 helpers take (their key
    /// argument is ours already).
    fn hmac(&self) -> impl Fn(&[u8], &[&[u8]]) -> [u8; 20] + '_ {
        |_, parts| {
            let mut context = hmac::Context::with_key(&self.auth);
            for part in parts {
                context.update(part);
            }
            let mut tag = [0; 20];
            tag.copy_from_slice(context.sign().as_ref());
            tag
        }
    }
}

/// AES-GCM with either key length: str0m's provider has a cipher trait per length, and this is
/// the one place that tells them apart. Everything else about the two profiles is the same
/// (RFC 7714: nonce, associated data, tag), so their IVs are made with `AeadAes128Gcm`'s.
enum Gcm {
    Aes128(Box<dyn AeadAes128GcmCipher>),
    Aes256(Box<dyn AeadAes256GcmCipher>),
}

impl Gcm {
    fn encrypt(
        &mut self,
        iv: &[u8; 12],
        aad: &[u8],
        input: &[u8],
        output: &mut [u8],
    ) -> Result<(), CryptoError> {
        match self {
            Self::Aes128(cipher) => cipher.encrypt(iv, aad, input, output),
            Self::Aes256(cipher) => cipher.encrypt(iv, aad, input, output),
        }
    }

    fn decrypt(
        &mut self,
        iv: &[u8; 12],
        aads: &[&[u8]],
        input: &[u8],
        output: &mut [u8],
    ) -> Result<usize, CryptoError> {
        match self {
            Self::Aes128(cipher) => cipher.decrypt(iv, aads, input, output),
            Self::Aes256(cipher) => cipher.decrypt(iv, aads, input, output),
        }
    }
}

impl Cipher {
    /// What protection adds after the payload.
    fn tag_len(&self) -> usize {
        match self {
            Self::Gcm { .. } => AeadAes128Gcm::TAG_LEN,
            Self::CmSha1 { .. } => Aes128CmSha1_80::HMAC_TAG_LEN,
        }
    }

    /// The cipher for a direction's keys (`encrypt` to protect, else to unprotect), with the
    /// session keys derived under RTP's or RTCP's labels.
    fn new(master: &SrtpMaster, encrypt: bool, labels: Labels) -> Self {
        // The process's provider: the ciphers every leg's str0m uses.
        let provider = crate::crypto::provider();
        let srtp = provider.srtp_provider;
        // Each key's and salt's length comes from where it goes.
        match master.profile {
            SrtpProfile::AeadAes128Gcm => Self::Gcm {
                salt: derived(srtp, master, labels.salt),
                cipher: Gcm::Aes128(
                    srtp.aead_aes_128_gcm()
                        .create_cipher(derived(srtp, master, labels.encryption), encrypt),
                ),
            },
            SrtpProfile::AeadAes256Gcm => Self::Gcm {
                salt: derived(srtp, master, labels.salt),
                cipher: Gcm::Aes256(
                    srtp.aead_aes_256_gcm()
                        .create_cipher(derived(srtp, master, labels.encryption), encrypt),
                ),
            },
            SrtpProfile::Aes128CmSha1_80 => Self::CmSha1 {
                salt: derived(srtp, master, labels.salt),
                cipher: Box::new(CmSha1::new(
                    &derived(srtp, master, labels.encryption),
                    &derived(srtp, master, labels.authentication),
                )),
            },
        }
    }
}

/// RFC 3711 §4.3.1's key-derivation labels for one kind of packet.
#[derive(Clone, Copy)]
struct Labels {
    encryption: u8,
    authentication: u8,
    salt: u8,
}

const RTP_LABELS: Labels = Labels {
    encryption: 0,
    authentication: 1,
    salt: 2,
};

const RTCP_LABELS: Labels = Labels {
    encryption: 3,
    authentication: 4,
    salt: 5,
};

impl SrtpStream {
    /// The stream for a direction's keys: `encrypt` to protect what we send, else to
    /// unprotect what we receive.
    pub fn new(master: &SrtpMaster, encrypt: bool) -> Self {
        Self {
            cipher: Cipher::new(master, encrypt, RTP_LABELS),
        }
    }

    /// Decrypts an SRTP packet whose rollover counter is `roc`: the RTP header and payload
    /// go to `out` (cleared first). Returns the header's length.
    ///
    /// # Errors
    /// When the datagram is not RTP or does not authenticate (wrong key, wrong `roc`, altered).
    pub fn unprotect(
        &mut self,
        roc: u32,
        packet: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<usize, SrtpError> {
        let header = header_len(packet).ok_or(SrtpError::NotRtp)?;
        let tag_len = self.cipher.tag_len();
        if packet.len() < header + tag_len {
            return Err(SrtpError::NotRtp);
        }
        let (ssrc, seq) = (ssrc(packet), seq(packet));
        out.clear();
        out.extend_from_slice(&packet[..header]);
        out.resize(packet.len(), 0);
        let aad = &packet[..header];
        let sealed = &packet[header..];
        let opened = match &mut self.cipher {
            Cipher::Gcm { salt, cipher } => {
                let iv = AeadAes128Gcm::rtp_iv(*salt, ssrc, roc, seq);
                cipher.decrypt(&iv, &[aad], sealed, &mut out[header..])
            }
            Cipher::CmSha1 { salt, cipher } => {
                // Authenticate first: nothing is decrypted from a packet that does not.
                let (covered, tag) = packet.split_at(packet.len() - tag_len);
                let index = srtp_index(roc, seq);
                if !Aes128CmSha1_80::rtp_verify(cipher.hmac(), &[], covered, index, tag) {
                    return Err(SrtpError::Authentication);
                }
                let iv = Aes128CmSha1_80::rtp_iv(*salt, ssrc, index);
                let payload = &covered[header..];
                cipher
                    .apply(iv, payload, &mut out[header..])
                    .map(|()| payload.len())
            }
        }
        .map_err(|_| SrtpError::Authentication)?;
        out.truncate(header + opened);
        Ok(header)
    }

    /// Encrypts an RTP packet (header and payload) whose rollover counter is `roc`: the SRTP
    /// packet goes to `out` (cleared first).
    ///
    /// # Errors
    /// When `packet` is not RTP.
    pub fn protect(&mut self, roc: u32, packet: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        let header = header_len(packet).ok_or(SrtpError::NotRtp)?;
        self.protect_parts(roc, &packet[..header], &packet[header..], out)
    }

    /// As [`SrtpStream::protect`], for a packet still in two parts (no copy to join them).
    ///
    /// # Errors
    /// When `header` is not a whole RTP header.
    pub fn protect_parts(
        &mut self,
        roc: u32,
        header: &[u8],
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SrtpError> {
        if header_len(header) != Some(header.len()) {
            return Err(SrtpError::NotRtp);
        }
        let (ssrc, seq) = (ssrc(header), seq(header));
        let sealed_at = header.len();
        let len = sealed_at + payload.len() + self.cipher.tag_len();
        out.clear();
        // One allocation of the final size, not one for the header and a second to grow it.
        out.reserve(len);
        out.extend_from_slice(header);
        out.resize(len, 0);
        let (aad, sealed) = out.split_at_mut(sealed_at);
        let result = match &mut self.cipher {
            Cipher::Gcm { salt, cipher } => {
                let iv = AeadAes128Gcm::rtp_iv(*salt, ssrc, roc, seq);
                cipher.encrypt(&iv, aad, payload, sealed)
            }
            Cipher::CmSha1 { salt, cipher } => {
                let index = srtp_index(roc, seq);
                let iv = Aes128CmSha1_80::rtp_iv(*salt, ssrc, index);
                cipher.apply(iv, payload, sealed).map(|()| {
                    let tag_at = sealed_at + payload.len();
                    Aes128CmSha1_80::rtp_hmac(cipher.hmac(), &[], out, index, tag_at);
                })
            }
        };
        // The buffer is sized for the payload and the tag: the cipher has no other way to fail.
        result.map_err(|_| SrtpError::NotRtp)
    }
}

/// One direction of a leg's RTCP protection (SRTCP: RFC 3711 §3.4, RFC 7714 §9), for the
/// reports the fast paths correct ([`crate::rtcp`]). A packet keeps the SRTCP index it came
/// with: str0m numbers what it sends, and each rewritten report replaces exactly one of its
/// packets, so no index is ever used twice with the key.
pub struct SrtcpStream {
    cipher: Cipher,
}

/// The E flag (the packet is encrypted) in the word that carries the SRTCP index.
const SRTCP_ENCRYPTED: u32 = 0x8000_0000;
/// The RTCP header and sender SSRC, sent in the clear.
const SRTCP_CLEAR: usize = 8;
/// The E flag and index.
const SRTCP_INDEX_LEN: usize = 4;

impl SrtcpStream {
    /// The stream for a direction's keys: `encrypt` to protect what we send, else to
    /// unprotect what we receive.
    pub fn new(master: &SrtpMaster, encrypt: bool) -> Self {
        Self {
            cipher: Cipher::new(master, encrypt, RTCP_LABELS),
        }
    }

    /// Decrypts an SRTCP packet: the compound RTCP packet goes to `out` (cleared first).
    /// Returns the word that carries the E flag and the SRTCP index, to protect a
    /// replacement with.
    ///
    /// # Errors
    /// When the datagram is too short to be SRTCP ([`SrtpError::NotRtcp`]), is sent in the
    /// clear (str0m and browsers always encrypt; such a packet is left to str0m), or does not
    /// authenticate.
    pub fn unprotect(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<u32, SrtpError> {
        let tag_len = self.cipher.tag_len();
        if packet.len() < SRTCP_CLEAR + SRTCP_INDEX_LEN + tag_len {
            return Err(SrtpError::NotRtcp);
        }
        // AES-GCM: header, sealed compound and tag, then the index word. AES-CM: header,
        // encrypted compound, index word, then the tag over all of them, checked first so
        // nothing is decrypted from a packet that does not authenticate.
        let (body, word_bytes) = match &self.cipher {
            Cipher::Gcm { .. } => packet.split_at(packet.len() - SRTCP_INDEX_LEN),
            Cipher::CmSha1 { cipher, .. } => {
                let (covered, tag) = packet.split_at(packet.len() - tag_len);
                if !Aes128CmSha1_80::rtcp_verify(cipher.hmac(), &[], covered, tag) {
                    return Err(SrtpError::Authentication);
                }
                covered.split_at(covered.len() - SRTCP_INDEX_LEN)
            }
        };
        let word = index_word_of(word_bytes)?;
        let index = word & !SRTCP_ENCRYPTED;
        let (clear, sealed) = body.split_at(SRTCP_CLEAR);
        let ssrc = u32_at(clear, 4);
        out.clear();
        out.extend_from_slice(clear);
        out.resize(body.len(), 0);
        let aad = [clear, word_bytes];
        let opened = match &mut self.cipher {
            Cipher::Gcm { salt, cipher } => {
                let iv = AeadAes128Gcm::rtcp_iv(*salt, ssrc, index);
                cipher.decrypt(&iv, &aad, sealed, &mut out[SRTCP_CLEAR..])
            }
            Cipher::CmSha1 { salt, cipher } => {
                let iv = Aes128CmSha1_80::rtp_iv(*salt, ssrc, u64::from(index));
                cipher
                    .apply(iv, sealed, &mut out[SRTCP_CLEAR..])
                    .map(|()| sealed.len())
            }
        };
        let len = opened.map_err(|_| SrtpError::Authentication)?;
        out.truncate(SRTCP_CLEAR + len);
        Ok(word)
    }

    /// Encrypts a compound RTCP packet under the E flag and SRTCP index `word` (as
    /// [`SrtcpStream::unprotect`] returned it): the SRTCP packet goes to `out` (cleared first).
    ///
    /// # Errors
    /// When `compound` is shorter than an RTCP header, or `word` is not for encryption.
    pub fn protect(
        &mut self,
        word: u32,
        compound: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SrtpError> {
        if compound.len() < SRTCP_CLEAR || word & SRTCP_ENCRYPTED == 0 {
            return Err(SrtpError::NotRtcp);
        }
        let ssrc = u32_at(compound, 4);
        let index = word & !SRTCP_ENCRYPTED;
        let (clear, plain) = compound.split_at(SRTCP_CLEAR);
        let tag_len = self.cipher.tag_len();
        out.clear();
        out.reserve(compound.len() + SRTCP_INDEX_LEN + tag_len);
        out.extend_from_slice(clear);
        out.resize(compound.len() + tag_len, 0);
        let result = match &mut self.cipher {
            Cipher::Gcm { salt, cipher } => {
                let iv = AeadAes128Gcm::rtcp_iv(*salt, ssrc, index);
                cipher.encrypt(
                    &iv,
                    &gcm_rtcp_aad(clear, word),
                    plain,
                    &mut out[SRTCP_CLEAR..],
                )
            }
            Cipher::CmSha1 { salt, cipher } => {
                let iv = Aes128CmSha1_80::rtp_iv(*salt, ssrc, u64::from(index));
                cipher.apply(iv, plain, &mut out[SRTCP_CLEAR..])
            }
        };
        // The buffer is sized for the compound and the tag: the cipher has no other way to fail.
        result.map_err(|_| SrtpError::NotRtcp)?;
        match &self.cipher {
            Cipher::Gcm { .. } => {
                out.extend_from_slice(&word.to_be_bytes());
            }
            Cipher::CmSha1 { cipher, .. } => {
                // The index goes before the tag, and the tag covers it.
                out.truncate(compound.len());
                out.extend_from_slice(&word.to_be_bytes());
                let tag_at = out.len();
                out.resize(tag_at + tag_len, 0);
                Aes128CmSha1_80::rtcp_hmac(cipher.hmac(), &[], out, tag_at);
            }
        }
        Ok(())
    }
}

/// The word with the E flag and SRTCP index; a packet sent in the clear is not ours to read.
fn index_word_of(bytes: &[u8]) -> Result<u32, SrtpError> {
    let word = u32_at(bytes, 0);
    if word & SRTCP_ENCRYPTED == 0 {
        return Err(SrtpError::NotRtcp);
    }
    Ok(word)
}

/// RFC 7714 §9.1: the associated data of SRTCP is the clear header and the index word.
fn gcm_rtcp_aad(clear: &[u8], word: u32) -> [u8; 12] {
    let mut aad = [0; 12];
    aad[..SRTCP_CLEAR].copy_from_slice(clear);
    aad[SRTCP_CLEAR..].copy_from_slice(&word.to_be_bytes());
    aad
}

/// RFC 3711's packet index: the rollover counter above the sequence number.
fn srtp_index(roc: u32, seq: u16) -> u64 {
    (u64::from(roc) << 16) | u64::from(seq)
}

/// What [`SrtpReceiver::receive`] made of a datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<'a> {
    /// An RTP packet of the stream, decrypted and authenticated.
    Rtp {
        /// Payload type.
        pt: u8,
        /// Sequence number.
        seq: u16,
        /// RFC 3711's packet index: the rollover counter above the sequence number.
        index: u64,
        /// RTP timestamp.
        timestamp: u32,
        /// The payload (padding removed).
        payload: &'a [u8],
    },
    /// A packet of the stream seen before, or too old to tell (RFC 3711 §3.3.2): drop it.
    Replayed,
    /// Not for this receiver: not RTP, another SSRC, or it does not authenticate. The slow
    /// path (str0m) decides.
    NotMine,
}

/// The receiving side of a leg's fast path: one SSRC's packets, decrypted with the leg's
/// keys, with the rollover counter and replay window of RFC 3711 §3.3.1 and Appendix A.
pub struct SrtpReceiver {
    stream: SrtpStream,
    /// The stream's SSRC: the first that authenticates.
    ssrc: Option<u32>,
    /// Highest index received (rollover counter << 16 | sequence number).
    highest: u64,
    /// Bit `i` set: index `highest - i` was received.
    window: u64,
    plain: Vec<u8>,
}

/// How far back the replay window reaches (RFC 3711's minimum).
const REPLAY_WINDOW: u64 = 64;

impl SrtpReceiver {
    /// A receiver for the keys the peer sends with.
    pub fn new(keys: &SrtpMaster) -> Self {
        Self {
            stream: SrtpStream::new(keys, false),
            ssrc: None,
            highest: 0,
            window: 0,
            plain: Vec::with_capacity(1500),
        }
    }

    /// The stream's SSRC, once a packet of it has authenticated.
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    /// Decrypts `packet` if it is RTP of this receiver's stream.
    pub fn receive(&mut self, packet: &[u8]) -> Received<'_> {
        if !is_rtp(packet) {
            return Received::NotMine;
        }
        let ssrc = ssrc(packet);
        if self.ssrc.is_some_and(|known| known != ssrc) {
            return Received::NotMine;
        }
        let seq = seq(packet);
        let index = match self.ssrc {
            Some(_) => self.estimate_index(seq),
            None => u64::from(seq),
        };
        if self.ssrc.is_some() && index <= self.highest {
            let behind = self.highest - index;
            if behind >= REPLAY_WINDOW || self.window & (1 << behind) != 0 {
                return Received::Replayed;
            }
        }
        let roc = u32::try_from(index >> 16).unwrap_or(u32::MAX);
        let Ok(header) = self.stream.unprotect(roc, packet, &mut self.plain) else {
            return Received::NotMine;
        };
        // Only an authenticated packet moves the state on.
        if self.ssrc.is_none() {
            self.ssrc = Some(ssrc);
            self.highest = index;
            self.window = 1;
        } else if index > self.highest {
            let ahead = index - self.highest;
            self.window = if ahead >= REPLAY_WINDOW {
                1
            } else {
                (self.window << ahead) | 1
            };
            self.highest = index;
        } else {
            self.window |= 1 << (self.highest - index);
        }
        let mut end = self.plain.len();
        if self.plain[0] & 0x20 != 0 {
            // Padding: the last byte says how much.
            let padding = usize::from(self.plain[end - 1]);
            end = end.saturating_sub(padding).max(header);
        }
        Received::Rtp {
            pt: self.plain[1] & 0x7f,
            seq,
            index,
            timestamp: u32::from_be_bytes([
                self.plain[4],
                self.plain[5],
                self.plain[6],
                self.plain[7],
            ]),
            payload: &self.plain[header..end],
        }
    }

    /// RFC 3711 Appendix A: the index of `seq`, the rollover counter guessed from the highest
    /// sequence number seen.
    fn estimate_index(&self, seq: u16) -> u64 {
        let roc = self.highest >> 16;
        let last = self.highest & 0xffff;
        let seq64 = u64::from(seq);
        let guess = if last < 0x8000 {
            if seq64 > last + 0x8000 && roc > 0 {
                roc - 1
            } else {
                roc
            }
        } else if seq64 + 0x8000 < last {
            roc + 1
        } else {
            roc
        };
        (guess << 16) | seq64
    }
}

/// Whether a datagram on a muxed RTP/RTCP port is RTP: version 2, and a second byte outside
/// RTCP's packet types (RFC 5761 §4).
pub fn is_rtp(packet: &[u8]) -> bool {
    packet.len() >= 12 && packet[0] >> 6 == 2 && !(192..=223).contains(&packet[1])
}

/// A session key or salt of `N` bytes: see [`derive`].
fn derived<const N: usize>(provider: &dyn SrtpProvider, master: &SrtpMaster, label: u8) -> [u8; N] {
    let mut out = [0; N];
    derive(provider, master, label, &mut out);
    out
}

/// RFC 3711 §4.3.1, the way str0m runs it (its `SrtpKey::derive`): AES in counter mode over
/// the salt with the label in byte 7, keyed with the master key.
fn derive(provider: &dyn SrtpProvider, master: &SrtpMaster, label: u8, out: &mut [u8]) {
    let mut input = [0u8; 16];
    input[..master.salt.len()].copy_from_slice(&master.salt);
    input[7] ^= label;
    let mut block = [0u8; 32];
    for (round, chunk) in (0u16..).zip(out.chunks_mut(16)) {
        input[14..].copy_from_slice(&round.to_be_bytes());
        if master.key.len() == 32 {
            provider.srtp_aes_256_ecb_round(&master.key, &input, &mut block);
        } else {
            provider.srtp_aes_128_ecb_round(&master.key, &input, &mut block);
        }
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

/// The RTP header's length (fixed part, CSRCs, extension), if `packet` is RTP version 2.
fn header_len(packet: &[u8]) -> Option<usize> {
    let first = *packet.first()?;
    if first >> 6 != 2 || packet.len() < 12 {
        return None;
    }
    let mut len = 12 + 4 * usize::from(first & 0x0f);
    if first & 0x10 != 0 {
        let words = packet.get(len + 2..len + 4)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    (len <= packet.len()).then_some(len)
}

fn seq(packet: &[u8]) -> u16 {
    u16::from_be_bytes([packet[2], packet[3]])
}

fn ssrc(packet: &[u8]) -> u32 {
    u32_at(packet, 8)
}

/// The big-endian 32-bit word at `at` (SSRCs, counts and times in RTP and RTCP).
pub(crate) fn u32_at(packet: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([packet[at], packet[at + 1], packet[at + 2], packet[at + 3]])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use str0m::change::SdpOffer;
    use str0m::media::{Direction, MediaKind, Mid, Pt};
    use str0m::net::{Protocol, Receive};
    use str0m::rtp::RtpWrite;
    use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

    use super::*;

    /// A str0m peer on the in-memory network, with the tapping provider.
    struct Peer {
        rtc: Rtc,
        addr: SocketAddr,
        keys: Option<LegKeys>,
        connected: bool,
        received: Vec<(u16, Vec<u8>)>,
        /// The SRTP datagrams it sent that carry RTP (first byte 0b10xx_xxxx, not RTCP).
        sent_rtp: Vec<Vec<u8>>,
        /// The SRTCP datagrams it sent.
        sent_rtcp: Vec<Vec<u8>>,
    }

    impl Peer {
        fn new(addr: &str, ice_lite: bool, now: Instant) -> Self {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut rtc = RtcConfig::new()
                .set_rtp_mode(true)
                .set_ice_lite(ice_lite)
                .set_crypto_provider(tapping_provider())
                .build(now);
            rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
            Self {
                rtc,
                addr,
                keys: None,
                connected: false,
                received: Vec::new(),
                sent_rtp: Vec::new(),
                sent_rtcp: Vec::new(),
            }
        }

        /// Drains the peer; returns the datagrams it sends.
        fn poll(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
            let mut out = Vec::new();
            loop {
                let output = self.rtc.poll_output().unwrap();
                // The keys are set up inside the poll that finishes DTLS: take them after
                // every poll of this peer, as the engine would.
                if let Some(keys) = take_leg_keys() {
                    self.keys = Some(keys);
                }
                match output {
                    Output::Timeout(_) => return out,
                    Output::Transmit(t) => {
                        let bytes = t.contents.to_vec();
                        if bytes[0] >> 6 == 2 && !(200..=206).contains(&bytes[1]) {
                            self.sent_rtp.push(bytes.clone());
                        } else if bytes[0] >> 6 == 2 {
                            self.sent_rtcp.push(bytes.clone());
                        }
                        out.push((t.destination, bytes));
                    }
                    Output::Event(Event::Connected) => self.connected = true,
                    Output::Event(Event::RtpPacket(p)) => {
                        self.received
                            .push((p.header.sequence_number, p.payload.to_vec()));
                    }
                    Output::Event(_) => {}
                }
            }
        }

        fn receive(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
            let receive = Receive::new(Protocol::Udp, from, self.addr, bytes).unwrap();
            self.rtc.handle_input(Input::Receive(now, receive)).unwrap();
        }
    }

    /// Two peers with an audio line between them, connected (ICE and DTLS done).
    fn connected_pair() -> (Peer, Peer, Mid, Instant) {
        let mut now = Instant::now();
        let mut a = Peer::new("10.0.0.1:1000", true, now);
        let mut b = Peer::new("10.0.0.2:2000", false, now);
        let mut change = a.rtc.sdp_api();
        let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let (offer, pending) = change.apply().unwrap();
        let offer = SdpOffer::from_sdp_string(&offer.to_sdp_string()).unwrap();
        let answer = b.rtc.sdp_api().accept_offer(offer).unwrap();
        a.rtc.sdp_api().accept_answer(pending, answer).unwrap();
        for _ in 0..2000 {
            for (to, bytes) in a.poll() {
                assert_eq!(to, b.addr);
                b.receive(now, a.addr, &bytes);
            }
            for (to, bytes) in b.poll() {
                assert_eq!(to, a.addr);
                a.receive(now, b.addr, &bytes);
            }
            if a.connected && b.connected && a.keys.is_some() && b.keys.is_some() {
                return (a, b, mid, now);
            }
            now += Duration::from_millis(5);
            a.rtc.handle_input(Input::Timeout(now)).unwrap();
            b.rtc.handle_input(Input::Timeout(now)).unwrap();
        }
        panic!("the peers did not connect");
    }

    fn write(peer: &mut Peer, mid: Mid, seq: u64, now: Instant, payload: &[u8]) {
        let mut api = peer.rtc.direct_api();
        let stream = api.stream_tx_by_mid(mid, None).unwrap();
        stream.write_rtp(RtpWrite::new(
            Pt::new_with_value(111),
            seq.into(),
            960 * seq as u32,
            now,
            Arc::<[u8]>::from(payload),
        ));
        // str0m's pacer releases what was written at its next timeout.
        peer.rtc.handle_input(Input::Timeout(now)).unwrap();
    }

    #[test]
    fn the_keys_taken_on_both_sides_match_and_decrypt_what_str0m_sends() {
        let (mut a, mut b, mid, now) = connected_pair();
        let (a_keys, b_keys) = (a.keys.clone().unwrap(), b.keys.clone().unwrap());
        assert_eq!(a_keys.send, b_keys.receive);
        assert_eq!(b_keys.send, a_keys.receive);
        assert_ne!(a_keys.send, a_keys.receive);
        // Two str0m peers settle on str0m's first choice.
        assert_eq!(a_keys.send.profile, SrtpProfile::AeadAes256Gcm);

        write(&mut a, mid, 7, now, b"opus frame seven");
        a.sent_rtp.clear();
        for (_, bytes) in a.poll() {
            b.receive(now, a.addr, &bytes);
        }
        b.poll();
        assert_eq!(b.received, vec![(7, b"opus frame seven".to_vec())]);

        let sent = a.sent_rtp.first().expect("str0m sent the packet");
        let mut stream = SrtpStream::new(&b_keys.receive, false);
        let mut plain = Vec::new();
        stream.unprotect(0, sent, &mut plain).unwrap();
        assert!(plain.ends_with(b"opus frame seven"));
        assert_eq!(&plain[2..4], &7u16.to_be_bytes());

        // A wrong rollover counter, a flipped bit or the other direction's keys: refused.
        assert_eq!(
            stream.unprotect(1, sent, &mut plain),
            Err(SrtpError::Authentication)
        );
        let mut altered = sent.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(
            stream.unprotect(0, &altered, &mut plain),
            Err(SrtpError::Authentication)
        );
        let mut wrong = SrtpStream::new(&b_keys.send, false);
        assert_eq!(
            wrong.unprotect(0, sent, &mut plain),
            Err(SrtpError::Authentication)
        );
        assert_eq!(
            stream.unprotect(0, b"\x01not rtp", &mut plain),
            Err(SrtpError::NotRtp)
        );
    }

    #[test]
    fn str0m_accepts_what_is_protected_with_the_keys_taken() {
        let (mut a, mut b, mid, now) = connected_pair();
        let a_keys = a.keys.clone().unwrap();

        // One packet through str0m, to learn the stream's header (SSRC, extensions).
        write(&mut a, mid, 20, now, b"first");
        a.sent_rtp.clear();
        for (_, bytes) in a.poll() {
            b.receive(now, a.addr, &bytes);
        }
        b.poll();
        let mut plain = Vec::new();
        SrtpStream::new(&a_keys.send, false)
            .unprotect(0, &a.sent_rtp[0], &mut plain)
            .unwrap();

        // The same header with the next sequence number and our own payload, protected here.
        let header = header_len(&plain).unwrap();
        let mut packet = plain[..header].to_vec();
        packet[2..4].copy_from_slice(&21u16.to_be_bytes());
        packet.extend_from_slice(b"forwarded without str0m");
        let mut sealed = Vec::new();
        SrtpStream::new(&a_keys.send, true)
            .protect(0, &packet, &mut sealed)
            .unwrap();
        b.receive(now, a.addr, &sealed);
        b.poll();
        assert_eq!(
            b.received,
            vec![
                (20, b"first".to_vec()),
                (21, b"forwarded without str0m".to_vec())
            ]
        );
    }

    /// str0m's own reports open with the keys taken, and sealed again under their SRTCP index
    /// they come out byte for byte as str0m sent them: the fast paths can correct a report
    /// and put it back in str0m's place.
    #[test]
    fn str0m_reports_open_with_the_keys_taken_and_seal_again_byte_for_byte() {
        let (mut a, mut b, mid, mut now) = connected_pair();
        let a_keys = a.keys.clone().unwrap();
        for seq in 1..=600 {
            write(&mut a, mid, seq, now, b"twenty milliseconds of opus");
            for (_, bytes) in a.poll() {
                b.receive(now, a.addr, &bytes);
            }
            for (_, bytes) in b.poll() {
                a.receive(now, b.addr, &bytes);
            }
            now += Duration::from_millis(20);
            b.rtc.handle_input(Input::Timeout(now)).unwrap();
        }
        assert!(a.sent_rtcp.len() >= 2, "12 s of audio and no reports");

        let mut open = SrtcpStream::new(&a_keys.send, false);
        let mut seal = SrtcpStream::new(&a_keys.send, true);
        let (mut plain, mut sealed) = (Vec::new(), Vec::new());
        let mut sender_reports = 0;
        for sent in &a.sent_rtcp {
            let word = open.unprotect(sent, &mut plain).unwrap();
            assert_eq!(word & SRTCP_ENCRYPTED, SRTCP_ENCRYPTED);
            assert_eq!(plain[0] >> 6, 2, "RTCP version 2");
            assert!((200..=207).contains(&plain[1]), "an RTCP packet type first");
            sender_reports += usize::from(plain[1] == 200);
            seal.protect(word, &plain, &mut sealed).unwrap();
            assert_eq!(&sealed, sent);
        }
        assert!(sender_reports > 0, "a sender of audio sends sender reports");

        // Altered, or opened with the other direction's keys: refused.
        let mut altered = a.sent_rtcp[0].clone();
        altered[10] ^= 1;
        assert_eq!(
            open.unprotect(&altered, &mut plain),
            Err(SrtpError::Authentication)
        );
        assert_eq!(
            SrtcpStream::new(&a_keys.receive, false).unprotect(&a.sent_rtcp[0], &mut plain),
            Err(SrtpError::Authentication)
        );
        assert_eq!(
            open.unprotect(b"\x80\xc8", &mut plain),
            Err(SrtpError::NotRtcp)
        );
    }

    /// Every profile: a report sealed under an index opens with that index, the same length as
    /// before; a report sent in the clear, or altered, is refused.
    #[test]
    fn reports_round_trip_under_every_profile() {
        let compound = [
            // A receiver report from SSRC 0x01020304 with no blocks, then an empty SDES.
            0x80, 201, 0, 1, 1, 2, 3, 4, 0x80, 202, 0, 0,
        ];
        for profile in [
            SrtpProfile::AeadAes256Gcm,
            SrtpProfile::AeadAes128Gcm,
            SrtpProfile::Aes128CmSha1_80,
        ] {
            let master = SrtpMaster::new(
                profile,
                &vec![7; profile.key_len()],
                &vec![9; profile.salt_len()],
            )
            .unwrap();
            let (mut sealed, mut plain) = (Vec::new(), Vec::new());
            let word = SRTCP_ENCRYPTED | 41;
            SrtcpStream::new(&master, true)
                .protect(word, &compound, &mut sealed)
                .unwrap();
            assert_ne!(&sealed[8..compound.len()], &compound[8..], "{profile:?}");
            let mut open = SrtcpStream::new(&master, false);
            assert_eq!(open.unprotect(&sealed, &mut plain), Ok(word), "{profile:?}");
            assert_eq!(plain, compound, "{profile:?}");
            let mut altered = sealed.clone();
            altered[9] ^= 0x40;
            assert_eq!(
                open.unprotect(&altered, &mut plain),
                Err(SrtpError::Authentication),
                "{profile:?}"
            );
            assert_eq!(
                SrtcpStream::new(&master, true).protect(41, &compound, &mut sealed),
                Err(SrtpError::NotRtcp),
                "{profile:?}: in the clear"
            );
        }
    }

    #[test]
    fn a_master_has_its_profiles_key_and_salt_lengths() {
        for (profile, key, salt) in [
            (SrtpProfile::AeadAes128Gcm, 16, 12),
            (SrtpProfile::AeadAes256Gcm, 32, 12),
            (SrtpProfile::Aes128CmSha1_80, 16, 14),
        ] {
            assert!(SrtpMaster::new(profile, &vec![1; key], &vec![2; salt]).is_some());
            assert!(SrtpMaster::new(profile, &vec![1; key + 1], &vec![2; salt]).is_none());
            assert!(SrtpMaster::new(profile, &vec![1; key], &vec![2; salt - 1]).is_none());
        }
    }

    #[test]
    fn the_receiver_follows_the_rollover_and_refuses_replays_with_aes_256_gcm() {
        receiver_follows_the_rollover_and_refuses_replays(SrtpProfile::AeadAes256Gcm);
    }

    #[test]
    fn the_receiver_follows_the_rollover_and_refuses_replays_with_aes_128_gcm() {
        receiver_follows_the_rollover_and_refuses_replays(SrtpProfile::AeadAes128Gcm);
    }

    #[test]
    fn the_receiver_follows_the_rollover_and_refuses_replays_with_aes_cm_hmac_sha1() {
        receiver_follows_the_rollover_and_refuses_replays(SrtpProfile::Aes128CmSha1_80);
    }

    /// RFC 3711 Appendix B.3: the session keys of AES-CM from its master key and salt.
    #[test]
    fn aes_cm_session_keys_match_rfc_3711() {
        let master = SrtpMaster {
            profile: SrtpProfile::Aes128CmSha1_80,
            key: hex("E1F97A0D3E018BE0D64FA32C06DE4139"),
            salt: hex("0EC675AD498AFEEBB6960B3AABE6"),
        };
        let provider = str0m::crypto::from_feature_flags().srtp_provider;
        let key: [u8; 16] = derived(provider, &master, RTP_LABELS.encryption);
        let salt: [u8; 14] = derived(provider, &master, RTP_LABELS.salt);
        let auth: [u8; 20] = derived(provider, &master, RTP_LABELS.authentication);
        assert_eq!(key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        assert_eq!(salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        assert_eq!(
            auth.to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
        );
    }

    /// RFC 3711 Appendix B.2's AES-CM key stream, and RFC 2202's first HMAC-SHA1 case: the
    /// keys this profile expands once give what the RFCs say.
    #[test]
    fn aes_cm_key_stream_and_hmac_sha1_match_their_rfcs() {
        let key: [u8; 16] = hex("2B7E151628AED2A6ABF7158809CF4F3C").try_into().unwrap();
        let cipher = CmSha1::new(&key, &[0x0b; 20]);
        let iv: [u8; 16] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000").try_into().unwrap();
        let mut stream = [0u8; 48];
        cipher.apply(iv, &[0; 48], &mut stream).unwrap();
        assert_eq!(
            stream.to_vec(),
            hex(concat!(
                "E03EAD0935C95E80E166B16DD92B4EB4",
                "D23513162B02D0F72A43A2FE4A5F97AB",
                "41E95B3BB0A2E8DD477901E4FCA894C0"
            ))
        );
        assert!(cipher.apply(iv, &[0; 48], &mut [0; 47]).is_err());
        assert_eq!(
            cipher.hmac()(&[], &[b"Hi ", b"There"]).to_vec(),
            hex("B617318655057264E28BC0B6FB378C8EF146BE00")
        );
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Sealed with one profile, opened by a receiver of the same keys: in order, across the
    /// sequence number's wrap, late, replayed, from elsewhere, altered.
    fn receiver_follows_the_rollover_and_refuses_replays(profile: SrtpProfile) {
        let master = SrtpMaster::new(
            profile,
            &vec![7; profile.key_len()],
            &vec![9; profile.salt_len()],
        )
        .unwrap();
        let mut tx = SrtpStream::new(&master, true);
        let mut rx = SrtpReceiver::new(&master);
        let mut seal = |roc: u32, ssrc: u32, seq: u16| {
            let mut packet = vec![0x80, 111];
            packet.extend(seq.to_be_bytes());
            packet.extend(960u32.to_be_bytes());
            packet.extend(ssrc.to_be_bytes());
            packet.extend(b"payload");
            let mut sealed = Vec::new();
            tx.protect(roc, &packet, &mut sealed).unwrap();
            sealed
        };
        let seqs = |rx: &mut SrtpReceiver, packet: &[u8]| match rx.receive(packet) {
            Received::Rtp {
                pt, seq, payload, ..
            } => {
                assert_eq!((pt, payload), (111, &b"payload"[..]));
                Some(seq)
            }
            Received::Replayed => None,
            Received::NotMine => Some(u16::MAX - 1000),
        };

        let first = seal(0, 5, 65_534);
        assert_eq!(seqs(&mut rx, &first), Some(65_534));
        assert_eq!(rx.receive(&first), Received::Replayed);
        assert_eq!(seqs(&mut rx, &seal(0, 5, 65_535)), Some(65_535));
        // The sequence number wraps: the rollover counter moves on.
        assert_eq!(seqs(&mut rx, &seal(1, 5, 0)), Some(0));
        // A late packet from before the wrap is still in the window, once.
        let late = seal(0, 5, 65_533);
        assert_eq!(seqs(&mut rx, &late), Some(65_533));
        assert_eq!(rx.receive(&late), Received::Replayed);
        assert_eq!(seqs(&mut rx, &seal(1, 5, 1)), Some(1));
        // Another SSRC, a packet sealed with the wrong rollover counter, RTCP, garbage: the
        // slow path's business.
        assert_eq!(rx.receive(&seal(0, 6, 2)), Received::NotMine);
        assert_eq!(rx.receive(&seal(0, 5, 2)), Received::NotMine);
        let mut rtcp = vec![0x80, 200, 0, 6];
        rtcp.extend([0; 24]);
        assert_eq!(rx.receive(&rtcp), Received::NotMine);
        assert_eq!(rx.receive(b"\x16\xfe\xfd"), Received::NotMine);
        // Far ahead: the window starts again there, and far behind is refused.
        assert_eq!(seqs(&mut rx, &seal(1, 5, 500)), Some(500));
        assert_eq!(rx.receive(&seal(1, 5, 3)), Received::Replayed);
        assert_eq!(seqs(&mut rx, &seal(1, 5, 499)), Some(499));
        // Altered anywhere (header, payload or tag): refused, and the window does not move.
        let good = seal(1, 5, 501);
        for at in [1, 13, good.len() - 1] {
            let mut altered = good.clone();
            altered[at] ^= 0x40;
            assert_eq!(rx.receive(&altered), Received::NotMine, "byte {at}");
        }
        assert_eq!(seqs(&mut rx, &good), Some(501));
    }
}
