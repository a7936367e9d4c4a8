//! SRTP for the floor relay, with no allocation per packet.
//!
//! The ciphers are str0m's own aws-lc-rs cipher objects (created through the
//! same [`CryptoProvider`] str0m uses), the key derivation is RFC 3711 §4.3 with
//! the provider's AES-ECB rounds, and the IVs come from `str0m_proto`'s profile
//! helpers — so per packet the floor pays exactly the cipher work str0m pays,
//! minus str0m's per-packet `Vec` and bookkeeping.

use str0m::crypto::dtls::SrtpProfile;
use str0m::crypto::{AeadAes128Gcm, AeadAes128GcmCipher, AeadAes256Gcm, AeadAes256GcmCipher};
use str0m::crypto::{Aes128CmSha1_80, Aes128CmSha1_80Cipher, CryptoProvider, Sha1HmacProvider, SrtpProvider};

use crate::tap::Keys;

const LABEL_RTP_ENC: u8 = 0;
const LABEL_RTP_AUTH: u8 = 1;
const LABEL_RTP_SALT: u8 = 2;

enum Dir {
    CmSha1 { auth: [u8; 20], salt: [u8; 14], c: Box<dyn Aes128CmSha1_80Cipher> },
    Gcm128 { salt: [u8; 12], c: Box<dyn AeadAes128GcmCipher> },
    Gcm256 { salt: [u8; 12], c: Box<dyn AeadAes256GcmCipher> },
}

/// One peer's SRTP: decrypt what it sends, encrypt what it receives.
pub struct Srtp {
    rx: Dir,
    tx: Dir,
    hmac: &'static dyn Sha1HmacProvider,
    pub profile: SrtpProfile,
}

fn derive(p: &dyn SrtpProvider, master: &[u8], salt: &[u8], label: u8, out: &mut [u8]) {
    let mut input = [0u8; 16];
    input[..salt.len()].copy_from_slice(salt);
    input[7] ^= label;
    let mut block = [0u8; 32];
    let mut i = 0;
    let mut round: u16 = 0;
    while i < out.len() {
        input[14..16].copy_from_slice(&round.to_be_bytes());
        if master.len() == 16 {
            p.srtp_aes_128_ecb_round(master, &input, &mut block);
        } else {
            p.srtp_aes_256_ecb_round(master, &input, &mut block);
        }
        let n = (out.len() - i).min(16);
        out[i..i + n].copy_from_slice(&block[..n]);
        i += n;
        round = round.wrapping_add(1);
    }
}

fn dir(cp: &CryptoProvider, profile: SrtpProfile, mat: &[u8], left: bool, encrypt: bool) -> Option<Dir> {
    let (kl, sl) = match profile {
        SrtpProfile::AES128_CM_SHA1_80 => (16, 14),
        SrtpProfile::AEAD_AES_128_GCM => (16, 12),
        SrtpProfile::AEAD_AES_256_GCM => (32, 12),
        _ => return None,
    };
    if mat.len() != 2 * kl + 2 * sl {
        return None;
    }
    let (ko, so) = if left { (0, 0) } else { (kl, sl) };
    let master = &mat[ko..ko + kl];
    let msalt = &mat[2 * kl + so..2 * kl + so + sl];
    let sp = cp.srtp_provider;
    Some(match profile {
        SrtpProfile::AES128_CM_SHA1_80 => {
            let mut key = [0u8; 16];
            let mut auth = [0u8; 20];
            let mut salt = [0u8; 14];
            derive(sp, master, msalt, LABEL_RTP_ENC, &mut key);
            derive(sp, master, msalt, LABEL_RTP_AUTH, &mut auth);
            derive(sp, master, msalt, LABEL_RTP_SALT, &mut salt);
            Dir::CmSha1 { auth, salt, c: sp.aes_128_cm_sha1_80().create_cipher(key, encrypt) }
        }
        SrtpProfile::AEAD_AES_128_GCM => {
            let mut key = [0u8; 16];
            let mut salt = [0u8; 12];
            derive(sp, master, msalt, LABEL_RTP_ENC, &mut key);
            derive(sp, master, msalt, LABEL_RTP_SALT, &mut salt);
            Dir::Gcm128 { salt, c: sp.aead_aes_128_gcm().create_cipher(key, encrypt) }
        }
        _ => {
            let mut key = [0u8; 32];
            let mut salt = [0u8; 12];
            derive(sp, master, msalt, LABEL_RTP_ENC, &mut key);
            derive(sp, master, msalt, LABEL_RTP_SALT, &mut salt);
            Dir::Gcm256 { salt, c: sp.aead_aes_256_gcm().create_cipher(key, encrypt) }
        }
    })
}

impl Srtp {
    /// From tapped DTLS keys, the way str0m splits them: we send with the half
    /// our DTLS role (`active`) selects and receive with the other.
    pub fn new(cp: &CryptoProvider, keys: &Keys) -> Option<Srtp> {
        Some(Srtp {
            rx: dir(cp, keys.profile, &keys.material, !keys.active, false)?,
            tx: dir(cp, keys.profile, &keys.material, keys.active, true)?,
            hmac: cp.sha1_hmac_provider,
            profile: keys.profile,
        })
    }

    /// Decrypt the payload of SRTP packet `pkt` (header `hlen` bytes) into
    /// `out`; returns the plaintext length, or `None` when it does not verify.
    /// `out` must hold the payload plus 16 bytes.
    pub fn unprotect(
        &mut self,
        pkt: &[u8],
        hlen: usize,
        ssrc: u32,
        index: u64,
        out: &mut [u8],
    ) -> Option<usize> {
        match &mut self.rx {
            Dir::CmSha1 { auth, salt, c } => {
                let tag_at = pkt.len().checked_sub(Aes128CmSha1_80::HMAC_TAG_LEN)?;
                if tag_at < hlen {
                    return None;
                }
                let hmac = self.hmac;
                let ok = Aes128CmSha1_80::rtp_verify(
                    |k, p| hmac.sha1_hmac(k, p),
                    auth,
                    &pkt[..tag_at],
                    index,
                    &pkt[tag_at..],
                );
                if !ok {
                    return None;
                }
                let iv = Aes128CmSha1_80::rtp_iv(*salt, ssrc, index);
                let n = tag_at - hlen;
                c.decrypt(&iv, &pkt[hlen..tag_at], &mut out[..n + 15]).ok()?;
                Some(n)
            }
            Dir::Gcm128 { salt, c } => {
                if pkt.len() < hlen + AeadAes128Gcm::TAG_LEN {
                    return None;
                }
                let iv = AeadAes128Gcm::rtp_iv(*salt, ssrc, (index >> 16) as u32, index as u16);
                let (aad, input) = pkt.split_at(hlen);
                c.decrypt(&iv, &[aad], input, out).ok()
            }
            Dir::Gcm256 { salt, c } => {
                if pkt.len() < hlen + AeadAes256Gcm::TAG_LEN {
                    return None;
                }
                let iv = AeadAes256Gcm::rtp_iv(*salt, ssrc, (index >> 16) as u32, index as u16);
                let (aad, input) = pkt.split_at(hlen);
                c.decrypt(&iv, &[aad], input, out).ok()
            }
        }
    }

    /// Encrypt `header` + `payload` into `out` (which must hold both plus 31
    /// bytes); returns the SRTP packet length.
    pub fn protect(
        &mut self,
        header: &[u8],
        payload: &[u8],
        ssrc: u32,
        index: u64,
        out: &mut [u8],
    ) -> Option<usize> {
        let h = header.len();
        let n = payload.len();
        out[..h].copy_from_slice(header);
        match &mut self.tx {
            Dir::CmSha1 { auth, salt, c } => {
                let iv = Aes128CmSha1_80::rtp_iv(*salt, ssrc, index);
                c.encrypt(&iv, payload, &mut out[h..h + n + 15]).ok()?;
                let hmac = self.hmac;
                Aes128CmSha1_80::rtp_hmac(
                    |k, p| hmac.sha1_hmac(k, p),
                    auth,
                    &mut out[..h + n + 10],
                    index,
                    h + n,
                );
                Some(h + n + Aes128CmSha1_80::HMAC_TAG_LEN)
            }
            Dir::Gcm128 { salt, c } => {
                let iv = AeadAes128Gcm::rtp_iv(*salt, ssrc, (index >> 16) as u32, index as u16);
                c.encrypt(&iv, header, payload, &mut out[h..h + n + AeadAes128Gcm::TAG_LEN]).ok()?;
                Some(h + n + AeadAes128Gcm::TAG_LEN)
            }
            Dir::Gcm256 { salt, c } => {
                let iv = AeadAes256Gcm::rtp_iv(*salt, ssrc, (index >> 16) as u32, index as u16);
                c.encrypt(&iv, header, payload, &mut out[h..h + n + AeadAes256Gcm::TAG_LEN]).ok()?;
                Some(h + n + AeadAes256Gcm::TAG_LEN)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(profile: SrtpProfile, len: usize, active: bool) -> Keys {
        Keys { material: (0..len as u8).collect(), profile, active }
    }

    #[test]
    fn what_one_side_protects_the_other_unprotects_in_every_profile() {
        let cp = str0m::crypto::from_feature_flags();
        for (profile, len) in [
            (SrtpProfile::AES128_CM_SHA1_80, 60),
            (SrtpProfile::AEAD_AES_128_GCM, 56),
            (SrtpProfile::AEAD_AES_256_GCM, 88),
        ] {
            let mut a = Srtp::new(&cp, &keys(profile, len, true)).unwrap();
            let mut b = Srtp::new(&cp, &keys(profile, len, false)).unwrap();
            let header = [0x80, 96, 0x12, 0x34, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
            let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
            let mut wire = vec![0u8; 1500];
            let n = a.protect(&header, &payload, 0xdeadbeef, 0x1_1234, &mut wire).unwrap();
            assert_ne!(&wire[12..1012], &payload[..], "{profile:?} encrypts");
            let mut plain = vec![0u8; 1500];
            let m = b.unprotect(&wire[..n], 12, 0xdeadbeef, 0x1_1234, &mut plain).unwrap();
            assert_eq!(&plain[..m], &payload[..], "{profile:?} round trip");
            // A flipped bit does not verify; the wrong index does not either.
            wire[40] ^= 1;
            assert!(b.unprotect(&wire[..n], 12, 0xdeadbeef, 0x1_1234, &mut plain).is_none());
            wire[40] ^= 1;
            assert!(b.unprotect(&wire[..n], 12, 0xdeadbeef, 0x2_1234, &mut plain).is_none());
            // Truncated input is refused, never a panic.
            assert!(b.unprotect(&wire[..14], 12, 0xdeadbeef, 0x1_1234, &mut plain).is_none());
        }
    }
}
