//! Tapping the DTLS-SRTP keys of a str0m peer, so the floor relay can do SRTP
//! itself.
//!
//! The floor lets str0m do what every WebRTC server must do once per peer
//! (ICE-lite, the DTLS handshake) and then takes the media path over: it needs
//! the SRTP master keys the handshake exported. str0m's crypto is pluggable
//! ([`CryptoProvider`]); [`tapping_provider`] wraps the aws-lc-rs provider str0m
//! uses by default and copies the `KeyingMaterial` output of the DTLS instance
//! into a [`KeySlot`] chosen by the thread that builds the `Rtc`
//! ([`with_slot`]). Everything else — the handshake, the SRTP ciphers — is the
//! unmodified aws-lc-rs code str0m itself runs.

use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use str0m::crypto::CryptoProvider;
use str0m::crypto::dtls::{DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion};
use str0m::crypto::dtls::{ProtocolVersion, SrtpProfile};
use str0m_proto::crypto::CryptoError;

/// What the handshake exported: keying material, the profile, and whether this
/// side was the DTLS client (`active`), which picks the halves of the material.
#[derive(Debug, Clone)]
pub struct Keys {
    pub material: Vec<u8>,
    pub profile: SrtpProfile,
    pub active: bool,
}

/// Where a tapped peer's keys land once its handshake completes.
pub type KeySlot = Arc<Mutex<Option<Keys>>>;

thread_local! {
    static NEXT: RefCell<Option<KeySlot>> = const { RefCell::new(None) };
}

/// Run `build` (which constructs one `Rtc` with [`tapping_provider`]) so that
/// the DTLS instance it creates reports its keys into `slot`.
pub fn with_slot<T>(slot: &KeySlot, build: impl FnOnce() -> T) -> T {
    NEXT.with(|n| *n.borrow_mut() = Some(slot.clone()));
    let out = build();
    NEXT.with(|n| n.borrow_mut().take());
    out
}

/// The aws-lc-rs provider with the DTLS factory wrapped.
pub fn tapping_provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| {
        let mut p = str0m::crypto::from_feature_flags();
        let inner = p.dtls_provider;
        p.dtls_provider = Box::leak(Box::new(TapProvider { inner }));
        Arc::new(p)
    })
    .clone()
}

struct TapProvider {
    inner: &'static dyn DtlsProvider,
}

impl fmt::Debug for TapProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TapProvider")
    }
}

impl DtlsProvider for TapProvider {
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
        let inner = self.inner.new_dtls(cert, now, dtls_version, mtu)?;
        Ok(match NEXT.with(|n| n.borrow_mut().take()) {
            Some(slot) => Box::new(TapInstance { inner, slot }),
            None => inner,
        })
    }

    fn is_test(&self) -> bool {
        self.inner.is_test()
    }
}

struct TapInstance {
    inner: Box<dyn DtlsInstance>,
    slot: KeySlot,
}

impl fmt::Debug for TapInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TapInstance")
    }
}

impl DtlsInstance for TapInstance {
    fn set_active(&mut self, active: bool) {
        self.inner.set_active(active)
    }
    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.inner.handle_packet(packet)
    }
    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let active = self.inner.is_active();
        let out = self.inner.poll_output(buf);
        if let DtlsOutput::KeyingMaterial(m, profile) = &out
            && let Ok(mut s) = self.slot.lock()
        {
            *s = Some(Keys { material: m.to_vec(), profile: *profile, active });
        }
        out
    }
    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.inner.handle_timeout(now)
    }
    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.inner.send_application_data(data)
    }
    fn is_active(&self) -> bool {
        self.inner.is_active()
    }
    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.inner.protocol_version()
    }
    fn is_closing(&self) -> bool {
        self.inner.is_closing()
    }
    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.inner.close()
    }
}
