//! Fleet commands: JWTs signed by the fleet authority, verified against the
//! key the box pins. Pure functions of (token, key, device id, `now`); no clock.
//!
//! A command's claims: `aud` = the device id (and `sub`, when present, too),
//! `jti` = the command id (idempotency and replay key), `name` (must match the
//! topic's `cmd/{name}`), `args` (JSON, per command), `exp` (unix seconds),
//! optional `iat`/`iss`.

use std::collections::HashSet;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::AuthorityAlgorithm;

/// Largest command payload read, bytes.
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;

/// The commands a box knows.
pub const COMMANDS: &[&str] = &[
    "start_recording",
    "stop_recording",
    "mute",
    "join_meeting",
    "leave_meeting",
    "reboot",
    "rotate_certificate",
    "install_update",
];

/// What a verified command says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandClaims {
    pub aud: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub jti: String,
    pub name: String,
    #[serde(default)]
    pub args: serde_json::Value,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// Why a command was refused. The label is the metric's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// Bigger than [`MAX_COMMAND_BYTES`].
    TooLarge,
    /// Not a signed JWT (garbage, JSON, `alg: none`).
    Unsigned,
    /// Signed with another algorithm than the pinned key's.
    WrongAlgorithm,
    /// The signature does not verify with the pinned key (forged).
    BadSignature,
    /// The claims are missing or malformed.
    BadClaims,
    /// `exp` has passed.
    Expired,
    /// `exp` is further away than `max_command_ttl`.
    LifetimeTooLong,
    /// `aud`/`sub` name another device.
    WrongDevice,
    /// The claims' `name` is not the topic's.
    NameMismatch,
    /// The name is not a command this box knows.
    UnknownCommand,
    /// The command id was seen before with a different token.
    ReplayedId,
}

impl Refusal {
    pub const ALL: [Refusal; 11] = [
        Refusal::TooLarge,
        Refusal::Unsigned,
        Refusal::WrongAlgorithm,
        Refusal::BadSignature,
        Refusal::BadClaims,
        Refusal::Expired,
        Refusal::LifetimeTooLong,
        Refusal::WrongDevice,
        Refusal::NameMismatch,
        Refusal::UnknownCommand,
        Refusal::ReplayedId,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::TooLarge => "too_large",
            Refusal::Unsigned => "unsigned",
            Refusal::WrongAlgorithm => "wrong_algorithm",
            Refusal::BadSignature => "bad_signature",
            Refusal::BadClaims => "bad_claims",
            Refusal::Expired => "expired",
            Refusal::LifetimeTooLong => "lifetime_too_long",
            Refusal::WrongDevice => "wrong_device",
            Refusal::NameMismatch => "name_mismatch",
            Refusal::UnknownCommand => "unknown_command",
            Refusal::ReplayedId => "replayed_id",
        }
    }
}

/// Why a key could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("the fleet authority key is not a {alg:?} PEM key: {source}")]
    Pem { alg: AuthorityAlgorithm, source: jsonwebtoken::errors::Error },
    #[error("cannot make a key pair: {0}")]
    Generate(String),
    #[error("cannot sign: {0}")]
    Sign(jsonwebtoken::errors::Error),
}

fn algorithm(a: AuthorityAlgorithm) -> Algorithm {
    match a {
        AuthorityAlgorithm::EdDSA => Algorithm::EdDSA,
        AuthorityAlgorithm::ES256 => Algorithm::ES256,
    }
}

/// Verifies commands for one device with the pinned authority key.
pub struct Verifier {
    key: DecodingKey,
    alg: Algorithm,
    device_id: String,
    max_ttl_secs: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("alg", &self.alg).field("device_id", &self.device_id).finish()
    }
}

impl Verifier {
    /// `public_pem`: the authority's public key (SPKI PEM).
    pub fn new(
        public_pem: &[u8],
        alg: AuthorityAlgorithm,
        device_id: &str,
        max_ttl_secs: u64,
    ) -> Result<Verifier, KeyError> {
        let key = match alg {
            AuthorityAlgorithm::EdDSA => DecodingKey::from_ed_pem(public_pem),
            AuthorityAlgorithm::ES256 => DecodingKey::from_ec_pem(public_pem),
        }
        .map_err(|source| KeyError::Pem { alg, source })?;
        Ok(Verifier { key, alg: algorithm(alg), device_id: device_id.to_owned(), max_ttl_secs })
    }

    /// Check a command token read from `cmd/{topic_name}` at `now` (unix seconds).
    pub fn verify(&self, payload: &[u8], topic_name: &str, now: u64) -> Result<CommandClaims, Refusal> {
        if payload.len() > MAX_COMMAND_BYTES {
            return Err(Refusal::TooLarge);
        }
        let token = std::str::from_utf8(payload).map_err(|_| Refusal::Unsigned)?.trim();
        if token.split('.').count() != 3 {
            return Err(Refusal::Unsigned);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Unsigned)?;
        if header.alg != self.alg {
            return Err(Refusal::WrongAlgorithm);
        }
        let mut v = Validation::new(self.alg);
        // Time and audience are checked below against the caller's `now`.
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        v.required_spec_claims = HashSet::new();
        v.leeway = 0;
        let data =
            jsonwebtoken::decode::<CommandClaims>(token, &self.key, &v).map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => Refusal::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Refusal::WrongAlgorithm,
                ErrorKind::Json(_) | ErrorKind::Utf8(_) | ErrorKind::Base64(_) | ErrorKind::InvalidToken => {
                    // A token whose signature fails *and* whose claims are garbage still says "bad signature"
                    // only if it got that far; jsonwebtoken checks the signature before the claims.
                    Refusal::BadClaims
                }
                _ => Refusal::BadSignature,
            })?;
        let c = data.claims;
        if c.aud != self.device_id || c.sub.as_ref().is_some_and(|s| s != &self.device_id) {
            return Err(Refusal::WrongDevice);
        }
        if !valid_command_id(&c.jti) {
            return Err(Refusal::BadClaims);
        }
        if c.exp <= now {
            return Err(Refusal::Expired);
        }
        if c.exp - now > self.max_ttl_secs {
            return Err(Refusal::LifetimeTooLong);
        }
        if c.name != topic_name {
            return Err(Refusal::NameMismatch);
        }
        if !COMMANDS.contains(&c.name.as_str()) {
            return Err(Refusal::UnknownCommand);
        }
        Ok(c)
    }
}

/// A command id: 1-64 of letters, digits, `-`, `_`, `.`.
pub fn valid_command_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The fleet authority's signing side (the operator CLI and tests).
pub struct Signer {
    key: EncodingKey,
    alg: Algorithm,
}

impl Signer {
    /// `private_pem`: PKCS#8 PEM.
    pub fn new(private_pem: &[u8], alg: AuthorityAlgorithm) -> Result<Signer, KeyError> {
        let key = match alg {
            AuthorityAlgorithm::EdDSA => EncodingKey::from_ed_pem(private_pem),
            AuthorityAlgorithm::ES256 => EncodingKey::from_ec_pem(private_pem),
        }
        .map_err(|source| KeyError::Pem { alg, source })?;
        Ok(Signer { key, alg: algorithm(alg) })
    }

    pub fn sign(&self, claims: &CommandClaims) -> Result<String, KeyError> {
        jsonwebtoken::encode(&Header::new(self.alg), claims, &self.key).map_err(KeyError::Sign)
    }
}

/// A new authority key pair as `(private PKCS#8 PEM, public SPKI PEM)`.
pub fn generate_authority_key(alg: AuthorityAlgorithm) -> Result<(String, String), KeyError> {
    let a = match alg {
        AuthorityAlgorithm::EdDSA => &rcgen::PKCS_ED25519,
        AuthorityAlgorithm::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
    };
    let kp = rcgen::KeyPair::generate_for(a).map_err(|e| KeyError::Generate(e.to_string()))?;
    Ok((kp.serialize_pem(), kp.public_key_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: u64) -> CommandClaims {
        CommandClaims {
            aud: "box-1".into(),
            sub: None,
            jti: "c1".into(),
            name: "mute".into(),
            args: serde_json::json!({"mic": true}),
            exp: now + 60,
            iat: Some(now),
            iss: None,
        }
    }

    fn pair(alg: AuthorityAlgorithm) -> (Signer, Verifier) {
        let (private, public) = generate_authority_key(alg).unwrap();
        (
            Signer::new(private.as_bytes(), alg).unwrap(),
            Verifier::new(public.as_bytes(), alg, "box-1", 3600).unwrap(),
        )
    }

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn a_signed_command_for_this_box_verifies_with_both_algorithms() {
        for alg in [AuthorityAlgorithm::EdDSA, AuthorityAlgorithm::ES256] {
            let (s, v) = pair(alg);
            let t = s.sign(&claims(NOW)).unwrap();
            assert_eq!(v.verify(t.as_bytes(), "mute", NOW).unwrap(), claims(NOW));
        }
    }

    #[test]
    fn each_bad_command_payload_is_refused_with_its_reason() {
        let (s, v) = pair(AuthorityAlgorithm::EdDSA);
        let (forger, _) = pair(AuthorityAlgorithm::EdDSA);
        let (es, _) = pair(AuthorityAlgorithm::ES256);
        let ok = claims(NOW);
        let with = |f: &dyn Fn(&mut CommandClaims)| {
            let mut c = ok.clone();
            f(&mut c);
            s.sign(&c).unwrap()
        };
        let unsigned = {
            use base64::Engine as _;
            let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            format!(
                "{}.{}.",
                e.encode(br#"{"alg":"none","typ":"JWT"}"#),
                e.encode(serde_json::to_vec(&ok).unwrap())
            )
        };
        let good = s.sign(&ok).unwrap();
        // One signature character in the middle flipped (the last one may only hold padding bits).
        let mut tampered = good.clone().into_bytes();
        let i = tampered.len() - 20;
        tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        let cases: Vec<(String, Vec<u8>, Refusal)> = vec![
            ("too large".into(), vec![b'a'; MAX_COMMAND_BYTES + 1], Refusal::TooLarge),
            ("empty".into(), vec![], Refusal::Unsigned),
            ("json".into(), br#"{"name":"mute"}"#.to_vec(), Refusal::Unsigned),
            ("not utf-8".into(), vec![0xff, 0xfe, b'.', b'.'], Refusal::Unsigned),
            ("alg none".into(), unsigned.into_bytes(), Refusal::Unsigned),
            ("garbage header".into(), b"x.y.z".to_vec(), Refusal::Unsigned),
            ("forged".into(), forger.sign(&ok).unwrap().into_bytes(), Refusal::BadSignature),
            ("tampered".into(), tampered.into_bytes(), Refusal::BadSignature),
            ("es256".into(), es.sign(&ok).unwrap().into_bytes(), Refusal::WrongAlgorithm),
            ("expired".into(), with(&|c| c.exp = NOW).into_bytes(), Refusal::Expired),
            ("too long".into(), with(&|c| c.exp = NOW + 7200).into_bytes(), Refusal::LifetimeTooLong),
            ("other device".into(), with(&|c| c.aud = "box-2".into()).into_bytes(), Refusal::WrongDevice),
            ("other sub".into(), with(&|c| c.sub = Some("box-2".into())).into_bytes(), Refusal::WrongDevice),
            ("bad id".into(), with(&|c| c.jti = "a/b".into()).into_bytes(), Refusal::BadClaims),
            ("empty id".into(), with(&|c| c.jti = String::new()).into_bytes(), Refusal::BadClaims),
            ("other name".into(), with(&|c| c.name = "reboot".into()).into_bytes(), Refusal::NameMismatch),
        ];
        for (what, payload, want) in cases {
            assert_eq!(v.verify(&payload, "mute", NOW).unwrap_err(), want, "{what}");
        }
        // Claims that are not the command shape, signed by the real key.
        #[derive(Serialize)]
        struct Other {
            aud: String,
            exp: u64,
        }
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::EdDSA),
            &Other { aud: "box-1".into(), exp: NOW + 5 },
            &s.key,
        )
        .unwrap();
        assert_eq!(v.verify(t.as_bytes(), "mute", NOW).unwrap_err(), Refusal::BadClaims);
        let unknown = with(&|c| c.name = "self_destruct".into());
        assert_eq!(v.verify(unknown.as_bytes(), "self_destruct", NOW).unwrap_err(), Refusal::UnknownCommand);
    }

    #[test]
    fn a_public_key_of_the_wrong_kind_is_a_clear_error() {
        let (_, public) = generate_authority_key(AuthorityAlgorithm::ES256).unwrap();
        let e = Verifier::new(public.as_bytes(), AuthorityAlgorithm::EdDSA, "box-1", 60).err().unwrap();
        assert!(e.to_string().contains("EdDSA"), "{e}");
        assert!(Verifier::new(b"not pem", AuthorityAlgorithm::ES256, "box-1", 60).is_err());
    }
}
