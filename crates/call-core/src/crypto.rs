//! The crypto provider every leg's `Rtc` is built with: str0m's own (aws-lc-rs), except that
//! DTLS set-up shares one configuration instead of building one per leg.
//!
//! Why: str0m's provider builds a new `dimpl::Config` for every `Rtc`, and building one
//! validates the crypto backend: a trial key exchange on every group it offers (P-384 among
//! them) and a trial signature check. Profiled at 300 calls being set up, that was ~1.5–2 ms of
//! the media thread per leg and a fifth of its time during the ramp, and every other call's
//! audio waited behind it (docs/performance.md). The configuration is the same for every leg
//! (no server cookie: ICE has already proven the peer's address; the default MTU), so it is
//! built and validated once per process and shared, which is what dimpl's `Arc<Config>` is for.
//! Anything else (another MTU, a DTLS version this code does not know) goes to str0m's
//! provider as before.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
};
use str0m::crypto::{CryptoError, CryptoProvider};

/// str0m's provider with the shared DTLS configuration. One for the whole process.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(base())).clone()
}

/// str0m's provider with the shared DTLS configuration, for wrapping further (the key-taking
/// provider of [`crate::srtp`] shares the same configuration).
pub(crate) fn base() -> CryptoProvider {
    static DTLS: OnceLock<&'static dyn DtlsProvider> = OnceLock::new();
    let inner = str0m::crypto::from_feature_flags();
    let dtls = *DTLS.get_or_init(|| {
        match dimpl::Config::builder().use_server_cookie(false).build() {
            Ok(config) => Box::leak(Box::new(SharedDtlsConfig {
                inner: inner.dtls_provider,
                config: Arc::new(config),
            })),
            // The same build str0m does per leg: if it fails here it fails there too, and
            // str0m reports it for each leg.
            Err(err) => {
                tracing::warn!(error = %err, "no shared DTLS configuration; each call builds its own");
                inner.dtls_provider
            }
        }
    });
    CryptoProvider {
        dtls_provider: dtls,
        ..inner
    }
}

#[derive(Debug)]
struct SharedDtlsConfig {
    inner: &'static dyn DtlsProvider,
    config: Arc<dimpl::Config>,
}

impl DtlsProvider for SharedDtlsConfig {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        self.inner.generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        if mtu.is_some_and(|mtu| mtu != self.config.mtu()) {
            return self.inner.new_dtls(cert, now, dtls_version, mtu);
        }
        let config = Arc::clone(&self.config);
        let dtls = match dtls_version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert.clone(), now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert.clone(), now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert.clone(), now),
            _ => return self.inner.new_dtls(cert, now, dtls_version, mtu),
        };
        Ok(Box::new(Dtls(dtls)))
    }
}

/// One leg's DTLS: dimpl's, as str0m's own provider wraps it.
struct Dtls(dimpl::Dtls);

impl std::fmt::Debug for Dtls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dtls").finish_non_exhaustive()
    }
}

impl DtlsInstance for Dtls {
    fn set_active(&mut self, active: bool) {
        self.0.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.0.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        self.0.poll_output(buf)
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.0.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.0.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.0.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.0.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.0.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.0.close()
    }
}
