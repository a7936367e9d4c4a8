//! str0m's crypto provider with one change: dimpl's DTLS configuration is
//! built once per process instead of once per peer.
//!
//! str0m-aws-lc-rs builds a `dimpl::Config` for every DTLS session, and
//! `dimpl::Config::build` validates its crypto provider each time by running
//! real key exchanges on every group it offers (X25519, P-256, P-384) and
//! checking its hashes, HMAC and AEADs. A perf profile of a room join showed
//! those exchanges as most of the join's CPU. The configuration is immutable
//! and shared through an `Arc` by design, so it is built (and validated) once
//! here per MTU, with exactly the settings str0m-aws-lc-rs uses (no server
//! cookie: ICE already proved return routability; the MTU str0m passes).
//! A DTLS version this code does not know goes to str0m's provider unchanged. Everything else (SRTP, HMAC, hashes, certificates) is
//! str0m's provider as it is.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
};
use str0m::crypto::{CryptoError, CryptoProvider};

/// The process's crypto provider for engine sessions.
pub(crate) fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    static DTLS: OnceLock<SharedConfigDtls> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let base = str0m::crypto::from_feature_flags();
            let dtls = DTLS.get_or_init(|| SharedConfigDtls { inner: base.dtls_provider });
            Arc::new(CryptoProvider { dtls_provider: dtls, ..base })
        })
        .clone()
}

/// str0m-aws-lc-rs's DTLS provider, with the default-MTU configuration built once.
#[derive(Debug)]
struct SharedConfigDtls {
    inner: &'static dyn DtlsProvider,
}

/// The configuration for `mtu`, built on first use. str0m passes the start of
/// its MTU range (the same for every session of a process: it comes from the
/// engine's config, not from peers), so this holds one or two entries.
fn shared_config(mtu: Option<usize>) -> Result<Arc<dimpl::Config>, CryptoError> {
    static CONFIGS: Mutex<Vec<(Option<usize>, Arc<dimpl::Config>)>> = Mutex::new(Vec::new());
    let mut configs = CONFIGS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, c)) = configs.iter().find(|(m, _)| *m == mtu) {
        return Ok(c.clone());
    }
    let mut builder = dimpl::Config::builder().use_server_cookie(false);
    if let Some(mtu) = mtu {
        builder = builder.mtu(mtu);
    }
    let config = Arc::new(
        builder.build().map_err(|e| CryptoError::Other(format!("dimpl config creation failed: {e}")))?,
    );
    if configs.len() < 8 {
        configs.push((mtu, config.clone()));
    }
    Ok(config)
}

impl DtlsProvider for SharedConfigDtls {
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
        if self.inner.is_test() {
            return self.inner.new_dtls(cert, now, dtls_version, mtu);
        }
        let config = shared_config(mtu)?;
        let dtls = match dtls_version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert.clone(), now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert.clone(), now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert.clone(), now),
            _ => return self.inner.new_dtls(cert, now, dtls_version, mtu),
        };
        Ok(Box::new(Session { dtls }))
    }

    fn is_test(&self) -> bool {
        self.inner.is_test()
    }
}

/// One peer's DTLS session: dimpl's, as str0m-aws-lc-rs wraps it.
struct Session {
    dtls: dimpl::Dtls,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl DtlsInstance for Session {
    fn set_active(&mut self, active: bool) {
        self.dtls.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.dtls.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        self.dtls.poll_output(buf)
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.dtls.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.dtls.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.dtls.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.dtls.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.dtls.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.dtls.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.dtls.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_is_built_once_and_shared() {
        let a = shared_config(Some(1150)).expect("dimpl builds its configuration");
        let b = shared_config(Some(1150)).expect("again");
        assert!(Arc::ptr_eq(&a, &b));
        let c = shared_config(Some(1400)).expect("another MTU");
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(Arc::ptr_eq(&crypto_provider(), &crypto_provider()));
    }
}
