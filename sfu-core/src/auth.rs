//! Access tokens: the JWT claims every signaling request carries, and their
//! verification.
//!
//! Verification lives here (not in the daemon) so that a cloud SFU node running
//! the same `sfu-core` accepts the same tokens. Two kinds of keys:
//!
//! * a local shared secret (`HS256`), the appliance's own key;
//! * public keys from an on-prem identity provider's JWKS (`RS256`/`RS384`/
//!   `RS512`, `ES256`/`ES384`, `EdDSA`), selected by `kid`.
//!
//! Each key only verifies the algorithm family it was configured for, so a token
//! that says `HS256` is never checked against an RSA public key used as an HMAC
//! secret (the classic HS-vs-RS confusion), and `alg: none` is never accepted.
//!
//! Each key may carry its own expected issuer and audience (an identity
//! provider's JWKS is added with the provider's `iss` and `aud`, see
//! [`TokenVerifier::with_jwks_for`]); keys without use the verifier-wide ones.
//!
//! The SFU does not insist on this type: it checks tokens through the
//! [`TokenCheck`] trait, which [`TokenVerifier`], [`LiveVerifier`] (a
//! verifier replaced at run time, e.g. when a JWKS is refreshed) and any
//! `Arc<T: TokenCheck>` implement, so an embedding service can hand it its
//! own, live, token service.
//!
//! Time is a parameter: [`TokenVerifier::verify`] takes `now` as Unix seconds and
//! checks `exp`/`nbf` itself, so tests do not depend on the wall clock.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, RwLock};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// What a token allows inside its room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Grants {
    /// May publish audio/video/screen tracks.
    pub publish: bool,
    /// May receive other participants' tracks.
    pub subscribe: bool,
    /// May start and stop recordings.
    pub record: bool,
    /// May kick, mute and manage the room (and, with `room = "*"`, every room).
    pub admin: bool,
}

/// The claims of a roombox access token.
///
/// ```json
/// {"sub":"alice","room":"demo","grants":{"publish":true,"subscribe":true},
///  "iat":1764000000,"exp":1764000900,"iss":"roombox","name":"Alice","tv":3}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The participant identity (unique within a room).
    pub sub: String,
    /// The room this token is for; `"*"` means every room and needs `admin`.
    pub room: String,
    /// What the bearer may do in that room.
    #[serde(default)]
    pub grants: Grants,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not before, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Display name shown to other participants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The user's token version when the token was issued. Bumping the stored
    /// version revokes every token issued before (see [`RevocationCheck`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tv: Option<u64>,
}

impl Claims {
    /// Claims for `identity` in `room`, valid from `now` for `ttl_secs`.
    pub fn new(identity: &str, room: &str, grants: Grants, now: u64, ttl_secs: u64) -> Self {
        Claims {
            sub: identity.to_owned(),
            room: room.to_owned(),
            grants,
            iat: now,
            exp: now.saturating_add(ttl_secs),
            nbf: None,
            iss: None,
            aud: None,
            name: None,
            tv: None,
        }
    }

    /// True when the token is valid for `room`.
    pub fn allows_room(&self, room: &str) -> bool {
        self.room == room || (self.room == "*" && self.grants.admin)
    }
}

/// Why a token was refused. Every variant maps to HTTP 401 or 403 at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("no bearer token: send `Authorization: Bearer <JWT>`")]
    Missing,
    #[error("the token is not a well-formed JWT: {0}")]
    Malformed(String),
    #[error("the token's algorithm {0} is not accepted here")]
    AlgorithmNotAllowed(String),
    #[error("no key matches the token (kid {0:?})")]
    UnknownKey(Option<String>),
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token expired at {exp} (now {now})")]
    Expired { exp: u64, now: u64 },
    #[error("the token is not valid before {nbf} (now {now})")]
    NotYetValid { nbf: u64, now: u64 },
    #[error("the token's issuer or audience is not the expected one")]
    WrongIssuerOrAudience,
    #[error("the token is for room {token_room:?}, not {room:?}")]
    WrongRoom { token_room: String, room: String },
    #[error("the token was revoked")]
    Revoked,
    #[error("the token does not grant {0}")]
    MissingGrant(&'static str),
    #[error("invalid key: {0}")]
    InvalidKey(String),
}

impl AuthError {
    /// 401 for "who are you?" problems, 403 for "you may not".
    pub fn http_status(&self) -> u16 {
        match self {
            AuthError::WrongRoom { .. } | AuthError::MissingGrant(_) => 403,
            _ => 401,
        }
    }
}

/// Revocation of tokens that are still within their lifetime, for example by a
/// per-user token version kept in the appliance's store.
pub trait RevocationCheck: Send + Sync + 'static {
    /// True when the token described by `claims` must be refused.
    fn is_revoked(&self, claims: &Claims) -> bool;
}

/// How the SFU checks the bearer token of a request for a room: signature,
/// lifetime, issuer/audience, revocation, and that the token is for `room`
/// (`now` is Unix seconds). Implemented by [`TokenVerifier`], [`LiveVerifier`]
/// and `Arc<T>`; [`crate::Sfu::start`] takes any implementation.
pub trait TokenCheck: Send + Sync {
    fn verify_for_room(&self, token: &str, room: &str, now: u64) -> Result<Claims, AuthError>;
}

impl<T: TokenCheck + ?Sized> TokenCheck for Arc<T> {
    fn verify_for_room(&self, token: &str, room: &str, now: u64) -> Result<Claims, AuthError> {
        (**self).verify_for_room(token, room, now)
    }
}

impl<T: TokenCheck + ?Sized> TokenCheck for Box<T> {
    fn verify_for_room(&self, token: &str, room: &str, now: u64) -> Result<Claims, AuthError> {
        (**self).verify_for_room(token, room, now)
    }
}

/// Who issued the keys of a set and for whom: a token verified by one of
/// those keys must carry this `iss` (and this `aud`, when set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyScope {
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl KeyScope {
    /// Tokens from `issuer`, for `audience` when it is given.
    pub fn new(issuer: impl Into<String>, audience: Option<&str>) -> Self {
        KeyScope { issuer: Some(issuer.into()), audience: audience.map(str::to_owned) }
    }
}

#[derive(Clone)]
struct VerifyKey {
    kid: Option<String>,
    /// Algorithms this key may verify (one family only).
    algs: Vec<Algorithm>,
    key: DecodingKey,
    /// The issuer/audience tokens signed with this key must name; `None`:
    /// the verifier-wide ones.
    scope: Option<Arc<KeyScope>>,
    /// A retiring key (rotated out): it verifies nothing after this Unix time,
    /// and only tokens whose `exp` is not later (no new tokens from it).
    not_after: Option<u64>,
}

/// Verifies access tokens. Cheap to clone (keys are shared).
#[derive(Clone)]
pub struct TokenVerifier {
    keys: Arc<Vec<VerifyKey>>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
    revocation: Option<Arc<dyn RevocationCheck>>,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("keys", &self.keys.len())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .field("revocation", &self.revocation.is_some())
            .finish()
    }
}

/// Smallest HS256 secret accepted (bytes).
pub const MIN_SECRET_LEN: usize = 32;

/// Clock skew tolerated on `exp`/`nbf` unless [`TokenVerifier::with_leeway`]
/// says otherwise. It protects against clocks that disagree by a few seconds
/// (an identity provider or cloud issuer whose clock runs ahead, a box whose
/// clock was just stepped by NTP); every second of it is also a second a token
/// is still accepted after its `exp`, so it stays small.
pub const DEFAULT_LEEWAY_SECS: u64 = 5;

/// Largest leeway a configuration may ask for.
pub const MAX_LEEWAY_SECS: u64 = 300;

impl TokenVerifier {
    /// A verifier with no keys: refuses everything until keys are added.
    pub fn new() -> Self {
        TokenVerifier {
            keys: Arc::new(Vec::new()),
            issuer: None,
            audience: None,
            leeway_secs: DEFAULT_LEEWAY_SECS,
            revocation: None,
        }
    }

    /// A verifier for tokens signed with a local shared secret (HS256).
    pub fn hs256(secret: &[u8]) -> Result<Self, AuthError> {
        Self::new().with_secret(secret)
    }

    /// Also accept HS256 tokens signed with `secret`.
    pub fn with_secret(mut self, secret: &[u8]) -> Result<Self, AuthError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(AuthError::InvalidKey(format!(
                "HS256 secret is {} bytes; at least {MIN_SECRET_LEN} are needed",
                secret.len()
            )));
        }
        Arc::make_mut(&mut self.keys).push(VerifyKey {
            kid: None,
            algs: vec![Algorithm::HS256],
            key: DecodingKey::from_secret(secret),
            scope: None,
            not_after: None,
        });
        Ok(self)
    }

    /// Also accept HS256 tokens signed with `secret` under key id `kid`
    /// (tokens without a `kid` are tried against every HS256 key). With
    /// `not_after` the key is retiring: after a rotation the old key verifies
    /// the tokens it signed until they expire, and nothing after `not_after`.
    pub fn with_secret_kid(
        mut self,
        secret: &[u8],
        kid: &str,
        not_after: Option<u64>,
    ) -> Result<Self, AuthError> {
        self = self.with_secret(secret)?;
        if let Some(k) = Arc::make_mut(&mut self.keys).last_mut() {
            k.kid = Some(kid.to_owned());
            k.not_after = not_after;
        }
        Ok(self)
    }

    /// Also accept tokens signed by the keys of an identity provider's JWKS.
    /// Symmetric (`oct`) keys in a JWKS are refused: a JWKS is public.
    /// The keys use the verifier-wide issuer/audience ([`with_issuer`](Self::with_issuer)).
    pub fn with_jwks(self, set: &JwkSet) -> Result<Self, AuthError> {
        self.add_jwks(set, None)
    }

    /// Also accept tokens signed by the keys of an identity provider's JWKS,
    /// but only with the provider's own `iss` (and `aud`, when the scope
    /// sets one) — whatever the verifier-wide expectations, so the box's own
    /// tokens and the provider's can each be checked against their issuer.
    pub fn with_jwks_for(self, set: &JwkSet, scope: KeyScope) -> Result<Self, AuthError> {
        self.add_jwks(set, Some(Arc::new(scope)))
    }

    fn add_jwks(mut self, set: &JwkSet, scope: Option<Arc<KeyScope>>) -> Result<Self, AuthError> {
        let mut keys = Vec::with_capacity(set.keys.len());
        for jwk in &set.keys {
            let mut key = jwk_key(jwk)?;
            key.scope = scope.clone();
            keys.push(key);
        }
        Arc::make_mut(&mut self.keys).extend(keys);
        Ok(self)
    }

    /// Require this `iss` (of tokens whose key has no scope of its own).
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Require this `aud` (of tokens whose key has no scope of its own).
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Clock skew tolerated on `exp`/`nbf` (default [`DEFAULT_LEEWAY_SECS`]).
    pub fn with_leeway(mut self, secs: u64) -> Self {
        self.leeway_secs = secs;
        self
    }

    /// Consult `check` after the signature verifies.
    pub fn with_revocation(mut self, check: Arc<dyn RevocationCheck>) -> Self {
        self.revocation = Some(check);
        self
    }

    /// Verify signature, algorithm, `exp`/`nbf` against `now` (Unix seconds),
    /// issuer/audience and revocation.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        let mut candidates = self
            .keys
            .iter()
            .filter(|k| k.algs.contains(&header.alg))
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                (Some(_), None) => true,
                (None, _) => true,
            })
            .filter(|k| k.not_after.is_none_or(|t| now <= t))
            .peekable();
        if candidates.peek().is_none() {
            return Err(if self.keys.iter().any(|k| k.algs.contains(&header.alg)) {
                AuthError::UnknownKey(header.kid.clone())
            } else {
                AuthError::AlgorithmNotAllowed(format!("{:?}", header.alg))
            });
        }
        // Several keys may fit (a token without `kid` during a key rotation):
        // the first whose signature verifies is the one.
        let mut last = AuthError::BadSignature;
        for key in candidates {
            match self.verify_with(token, &header, key, now) {
                Err(e @ AuthError::BadSignature) => last = e,
                other => return other,
            }
        }
        Err(last)
    }

    fn verify_with(
        &self,
        token: &str,
        header: &jsonwebtoken::Header,
        key: &VerifyKey,
        now: u64,
    ) -> Result<Claims, AuthError> {
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        // exp/nbf are checked below against the `now` we were given.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims = HashSet::new();
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm => AuthError::AlgorithmNotAllowed(format!("{:?}", header.alg)),
                _ => AuthError::Malformed(e.to_string()),
            }
        })?;
        let claims = data.claims;
        if key.not_after.is_some_and(|t| claims.exp > t) {
            return Err(AuthError::UnknownKey(header.kid.clone()));
        }

        if now > claims.exp.saturating_add(self.leeway_secs) {
            return Err(AuthError::Expired { exp: claims.exp, now });
        }
        if let Some(nbf) = claims.nbf
            && now.saturating_add(self.leeway_secs) < nbf
        {
            return Err(AuthError::NotYetValid { nbf, now });
        }
        let (issuer, audience) = match &key.scope {
            Some(scope) => (scope.issuer.as_ref(), scope.audience.as_ref()),
            None => (self.issuer.as_ref(), self.audience.as_ref()),
        };
        if issuer.is_some_and(|iss| claims.iss.as_deref() != Some(iss.as_str()))
            || audience.is_some_and(|aud| claims.aud.as_deref() != Some(aud.as_str()))
        {
            return Err(AuthError::WrongIssuerOrAudience);
        }
        if claims.sub.is_empty() || claims.room.is_empty() {
            return Err(AuthError::Malformed("empty `sub` or `room`".into()));
        }
        if claims.room == "*" && !claims.grants.admin {
            return Err(AuthError::MissingGrant("admin (needed for room \"*\")"));
        }
        if let Some(check) = &self.revocation
            && check.is_revoked(&claims)
        {
            return Err(AuthError::Revoked);
        }
        Ok(claims)
    }

    /// [`verify`](Self::verify), then check that the token is for `room`.
    pub fn verify_for_room(&self, token: &str, room: &str, now: u64) -> Result<Claims, AuthError> {
        let claims = self.verify(token, now)?;
        if !claims.allows_room(room) {
            return Err(AuthError::WrongRoom { token_room: claims.room, room: room.to_owned() });
        }
        Ok(claims)
    }
}

impl Default for TokenVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl TokenCheck for TokenVerifier {
    fn verify_for_room(&self, token: &str, room: &str, now: u64) -> Result<Claims, AuthError> {
        TokenVerifier::verify_for_room(self, token, room, now)
    }
}

/// A [`TokenVerifier`] that can be replaced while the SFU runs (a JWKS
/// refreshed from the identity provider, a rotated secret): requests in
/// flight finish with the verifier they started with, new ones use the new one.
#[derive(Debug, Default)]
pub struct LiveVerifier {
    current: RwLock<Arc<TokenVerifier>>,
}

impl LiveVerifier {
    pub fn new(verifier: TokenVerifier) -> Self {
        LiveVerifier { current: RwLock::new(Arc::new(verifier)) }
    }

    /// Use `verifier` from now on.
    pub fn replace(&self, verifier: TokenVerifier) {
        let next = Arc::new(verifier);
        match self.current.write() {
            Ok(mut v) => *v = next,
            // a writer panicked mid-swap: the value is a whole Arc either way
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }

    /// The verifier in use now.
    pub fn current(&self) -> Arc<TokenVerifier> {
        match self.current.read() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl TokenCheck for LiveVerifier {
    fn verify_for_room(&self, token: &str, room: &str, now: u64) -> Result<Claims, AuthError> {
        self.current().verify_for_room(token, room, now)
    }
}

fn jwk_key(jwk: &Jwk) -> Result<VerifyKey, AuthError> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, KeyAlgorithm};
    let key = DecodingKey::from_jwk(jwk).map_err(|e| AuthError::InvalidKey(e.to_string()))?;
    let declared = jwk.common.key_algorithm.map(|a| format!("{a:?}"));
    let algs = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => match jwk.common.key_algorithm {
            Some(KeyAlgorithm::RS384) => vec![Algorithm::RS384],
            Some(KeyAlgorithm::RS512) => vec![Algorithm::RS512],
            Some(KeyAlgorithm::PS256) => vec![Algorithm::PS256],
            Some(KeyAlgorithm::RS256) | None => vec![Algorithm::RS256],
            Some(_) => {
                return Err(AuthError::InvalidKey(format!("RSA key with alg {declared:?}")));
            }
        },
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => {
                return Err(AuthError::InvalidKey(format!("unsupported curve {:?}", ec.curve)));
            }
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        AlgorithmParameters::OctetKey(_) => {
            return Err(AuthError::InvalidKey("symmetric (oct) keys are not accepted from a JWKS".into()));
        }
        _ => return Err(AuthError::InvalidKey("unsupported JWK key type".into())),
    };
    Ok(VerifyKey { kid: jwk.common.key_id.clone(), algs, key, scope: None, not_after: None })
}

/// Sign `claims` with a local HS256 secret (the appliance's own key).
pub fn sign_hs256(claims: &Claims, secret: &[u8]) -> Result<String, AuthError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(AuthError::InvalidKey(format!(
            "HS256 secret is {} bytes; at least {MIN_SECRET_LEN} are needed",
            secret.len()
        )));
    }
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret))
        .map_err(|e| AuthError::InvalidKey(e.to_string()))
}

/// [`sign_hs256`] with a key id in the header (for key rotation).
pub fn sign_hs256_kid(claims: &Claims, secret: &[u8], kid: &str) -> Result<String, AuthError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(AuthError::InvalidKey(format!(
            "HS256 secret is {} bytes; at least {MIN_SECRET_LEN} are needed",
            secret.len()
        )));
    }
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_secret(secret))
        .map_err(|e| AuthError::InvalidKey(e.to_string()))
}

/// Take the token out of an `Authorization: Bearer …` header value.
pub fn bearer(header_value: &str) -> Result<&str, AuthError> {
    let v = header_value.trim();
    let (scheme, rest) = v.split_once(' ').ok_or(AuthError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || rest.trim().is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(rest.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_764_000_000;

    fn token(claims: &Claims) -> String {
        sign_hs256(claims, SECRET).expect("sign")
    }

    fn alice() -> Claims {
        Claims::new("alice", "demo", Grants { publish: true, subscribe: true, ..Grants::default() }, NOW, 900)
    }

    #[test]
    fn a_fresh_token_verifies_and_carries_its_grants() {
        let v = TokenVerifier::hs256(SECRET).unwrap();
        let c = v.verify_for_room(&token(&alice()), "demo", NOW + 10).unwrap();
        assert_eq!(c.sub, "alice");
        assert!(c.grants.publish && c.grants.subscribe && !c.grants.admin);
    }

    #[test]
    fn an_expired_token_is_refused_after_the_leeway() {
        let v = TokenVerifier::hs256(SECRET).unwrap().with_leeway(0);
        let err = v.verify(&token(&alice()), NOW + 901).unwrap_err();
        assert_eq!(err, AuthError::Expired { exp: NOW + 900, now: NOW + 901 });
        assert_eq!(err.http_status(), 401);
    }

    #[test]
    fn the_default_leeway_is_small_and_bounds_both_exp_and_nbf() {
        let v = TokenVerifier::hs256(SECRET).unwrap();
        let exp = NOW + 900;
        assert!(v.verify(&token(&alice()), exp + DEFAULT_LEEWAY_SECS).is_ok(), "within the leeway");
        let err = v.verify(&token(&alice()), exp + DEFAULT_LEEWAY_SECS + 1).unwrap_err();
        assert_eq!(err, AuthError::Expired { exp, now: exp + DEFAULT_LEEWAY_SECS + 1 });
        let mut early = alice();
        early.nbf = Some(NOW + 100);
        assert!(v.verify(&token(&early), NOW + 100 - DEFAULT_LEEWAY_SECS).is_ok());
        assert!(matches!(
            v.verify(&token(&early), NOW + 99 - DEFAULT_LEEWAY_SECS),
            Err(AuthError::NotYetValid { .. })
        ));
        let v = v.with_leeway(60);
        assert!(v.verify(&token(&alice()), exp + 60).is_ok(), "a configured leeway is used");
        assert!(v.verify(&token(&alice()), exp + 61).is_err());
    }

    #[test]
    fn a_token_for_another_room_is_forbidden() {
        let v = TokenVerifier::hs256(SECRET).unwrap();
        let err = v.verify_for_room(&token(&alice()), "boardroom", NOW).unwrap_err();
        assert!(matches!(err, AuthError::WrongRoom { .. }));
        assert_eq!(err.http_status(), 403);
    }

    #[test]
    fn a_tampered_payload_breaks_the_signature() {
        let v = TokenVerifier::hs256(SECRET).unwrap();
        let t = token(&alice());
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        let mut evil = alice();
        evil.grants.admin = true;
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&evil).unwrap());
        let err = v.verify(&parts.join("."), NOW).unwrap_err();
        assert_eq!(err, AuthError::BadSignature);
    }

    #[test]
    fn alg_none_is_never_accepted() {
        let v = TokenVerifier::hs256(SECRET).unwrap();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&alice()).unwrap());
        let err = v.verify(&format!("{header}.{payload}."), NOW).unwrap_err();
        assert!(matches!(err, AuthError::Malformed(_) | AuthError::AlgorithmNotAllowed(_)), "{err:?}");
    }

    #[test]
    fn wrong_secret_is_a_bad_signature() {
        let v = TokenVerifier::hs256(b"another-secret-another-secret-xx").unwrap();
        assert_eq!(v.verify(&token(&alice()), NOW).unwrap_err(), AuthError::BadSignature);
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let v = TokenVerifier::hs256(SECRET).unwrap();
        for junk in ["", "a", "a.b", "a.b.c", "....", "eyJ.eyJ.sig", "\u{0}\u{1}"] {
            let err = v.verify(junk, NOW).unwrap_err();
            assert!(matches!(err, AuthError::Missing | AuthError::Malformed(_)), "{junk:?} -> {err:?}");
        }
    }

    #[test]
    fn room_star_needs_admin() {
        let v = TokenVerifier::hs256(SECRET).unwrap();
        let mut c = alice();
        c.room = "*".into();
        assert_eq!(
            v.verify(&token(&c), NOW).unwrap_err(),
            AuthError::MissingGrant("admin (needed for room \"*\")")
        );
        c.grants.admin = true;
        assert!(v.verify_for_room(&token(&c), "anything", NOW).is_ok());
    }

    #[test]
    fn revocation_hook_refuses_old_token_versions() {
        struct MinVersion(u64);
        impl RevocationCheck for MinVersion {
            fn is_revoked(&self, c: &Claims) -> bool {
                c.tv.unwrap_or(0) < self.0
            }
        }
        let v = TokenVerifier::hs256(SECRET).unwrap().with_revocation(Arc::new(MinVersion(2)));
        let mut c = alice();
        c.tv = Some(1);
        assert_eq!(v.verify(&token(&c), NOW).unwrap_err(), AuthError::Revoked);
        c.tv = Some(2);
        assert!(v.verify(&token(&c), NOW).is_ok());
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(TokenVerifier::hs256(b"short"), Err(AuthError::InvalidKey(_))));
    }

    /// Test-only Ed25519 keys of two identity providers (made with `openssl genpkey`).
    const IDP_A_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIM5SuOwMG5WU4+6bIYsjXXUAwZ4D8MxKvYt3xFI1LijA\n-----END PRIVATE KEY-----\n";
    const IDP_A_X: &str = "TAQsrMwnr31f9kq4R2HGNLwWwAMpmZDxgAqgz0qvy-Q";
    const IDP_B_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINxkQUG/wAiWU957LimBoKKnWvRN16+86YStjIsdXmW0\n-----END PRIVATE KEY-----\n";
    const IDP_B_X: &str = "k6Ertbvo8fkMgXlp0BXpQFvQk76Zuw300INL5BLs7GA";

    fn jwks(kid: &str, x: &str) -> JwkSet {
        serde_json::from_value(serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": x, "alg": "EdDSA", "use": "sig"}]}))
            .unwrap()
    }

    fn idp_token(pem: &str, kid: &str, iss: &str, aud: Option<&str>) -> String {
        let mut c = alice();
        c.iss = Some(iss.into());
        c.aud = aud.map(str::to_owned);
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, &c, &EncodingKey::from_ed_pem(pem.as_bytes()).unwrap()).unwrap()
    }

    /// The box's own HS256 tokens (issuer "roombox") and an identity
    /// provider's EdDSA tokens (its own issuer and audience) in one verifier:
    /// each is checked against its own issuer, neither passes for the other's.
    #[test]
    fn each_key_checks_its_own_issuer_and_audience() {
        let v = TokenVerifier::hs256(SECRET)
            .unwrap()
            .with_issuer("roombox")
            .with_jwks_for(&jwks("idp-a", IDP_A_X), KeyScope::new("https://idp.example", Some("roombox-sfu")))
            .unwrap();
        let mut own = alice();
        own.iss = Some("roombox".into());
        assert!(v.verify(&token(&own), NOW).is_ok(), "the box's own token");
        own.iss = Some("https://idp.example".into());
        assert_eq!(
            v.verify(&token(&own), NOW).unwrap_err(),
            AuthError::WrongIssuerOrAudience,
            "own key, IdP issuer"
        );

        let t = idp_token(IDP_A_PEM, "idp-a", "https://idp.example", Some("roombox-sfu"));
        let c = v.verify(&t, NOW).expect("the provider's token with its issuer and audience");
        assert_eq!(c.sub, "alice");
        let wrong_iss = idp_token(IDP_A_PEM, "idp-a", "roombox", Some("roombox-sfu"));
        assert_eq!(
            v.verify(&wrong_iss, NOW).unwrap_err(),
            AuthError::WrongIssuerOrAudience,
            "the box's issuer on an IdP key"
        );
        let wrong_aud = idp_token(IDP_A_PEM, "idp-a", "https://idp.example", Some("another-app"));
        assert_eq!(v.verify(&wrong_aud, NOW).unwrap_err(), AuthError::WrongIssuerOrAudience);
        let no_aud = idp_token(IDP_A_PEM, "idp-a", "https://idp.example", None);
        assert_eq!(v.verify(&no_aud, NOW).unwrap_err(), AuthError::WrongIssuerOrAudience);
        // another provider's key under the same kid does not verify
        let forged = idp_token(IDP_B_PEM, "idp-a", "https://idp.example", Some("roombox-sfu"));
        assert_eq!(v.verify(&forged, NOW).unwrap_err(), AuthError::BadSignature);
    }

    /// The SFU checks tokens through `TokenCheck`: a live verifier whose
    /// JWKS is replaced at run time accepts the new provider key at once and
    /// refuses the retired one, through the same `Arc<dyn TokenCheck>`.
    #[test]
    fn a_live_verifier_takes_a_refreshed_jwks_at_once() {
        let scope = || KeyScope::new("https://idp.example", None);
        let live = Arc::new(LiveVerifier::new(
            TokenVerifier::new().with_jwks_for(&jwks("k1", IDP_A_X), scope()).unwrap(),
        ));
        let check: Arc<dyn TokenCheck> = live.clone();
        let old = idp_token(IDP_A_PEM, "k1", "https://idp.example", None);
        let new = idp_token(IDP_B_PEM, "k2", "https://idp.example", None);
        assert!(check.verify_for_room(&old, "demo", NOW).is_ok());
        assert!(matches!(
            check.verify_for_room(&new, "demo", NOW),
            Err(AuthError::UnknownKey(_) | AuthError::BadSignature)
        ));
        live.replace(TokenVerifier::new().with_jwks_for(&jwks("k2", IDP_B_X), scope()).unwrap());
        assert!(check.verify_for_room(&new, "demo", NOW).is_ok(), "the refreshed key");
        assert!(check.verify_for_room(&old, "demo", NOW).is_err(), "the retired key");
        assert!(matches!(check.verify_for_room(&new, "boardroom", NOW), Err(AuthError::WrongRoom { .. })));
        // a plain TokenVerifier is a TokenCheck too
        let plain: &dyn TokenCheck = &TokenVerifier::hs256(SECRET).unwrap();
        assert!(plain.verify_for_room(&token(&alice()), "demo", NOW).is_ok());
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer("Bearer abc").unwrap(), "abc");
        assert_eq!(bearer("bearer   abc ").unwrap(), "abc");
        assert_eq!(bearer("Basic abc").unwrap_err(), AuthError::Missing);
        assert_eq!(bearer("Bearer").unwrap_err(), AuthError::Missing);
    }
}
