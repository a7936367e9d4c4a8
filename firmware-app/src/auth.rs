//! Authentication: the box's signing key, access and refresh tokens, local
//! users, login rate limits, and an optional on-prem identity provider.
//!
//! * **Access tokens** are sfu-core [`Claims`] signed HS256 with the key in the
//!   data dir (`jwt.key`, 0600, made on first boot). 15 minutes by default. A
//!   local user's tokens carry `tv`, the user's token version.
//! * **Refresh tokens** are 32 random bytes (`rbr_…`), stored only as their
//!   SHA-256, valid 7 days, **rotated on every use**. Presenting a token that was
//!   already rotated means it was stolen (or replayed): the whole family is revoked.
//! * **Revocation**: bumping a user's token version revokes every refresh token
//!   of the user in the store, and — through a [`RevocationCheck`] backed by an
//!   in-memory copy of the versions — every access token carrying an older `tv`,
//!   in the API and in the SFU alike.
//! * **Logins** are rate-limited per client IP and per username
//!   ([`LoginLimiter`], sans-IO: time is a parameter) and answered with
//!   `Retry-After`. Unknown users cost the same argon2 work as known ones.
//! * **OIDC**: tokens of an on-prem provider verify through its JWKS (a file,
//!   or a URL fetched at start and refreshed); only asymmetric keys are taken,
//!   so an `HS256` token "signed" with the provider's public key never verifies.
//! * **First boot**: with no users in the store, user `admin` is created with a
//!   random password written to `<data_dir>/initial-admin-password` (0600); the
//!   log says where, never what. `roomboxd passwd` sets a password from the
//!   console; changing the password through the API deletes the file.

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sfu_core::auth::{
    AuthError, Claims, Grants, RevocationCheck, TokenCheck, TokenVerifier, sign_hs256, sign_hs256_kid,
};

use crate::config::{AuthConfig, OidcConfig};
use crate::store::{Role, Store, StoreError, atomic, q};

/// The signing key's file name in the data dir.
pub const KEY_FILE: &str = "jwt.key";
/// The key a rotation retired (`<hex key> <unix time it stops verifying>`),
/// kept so the tokens it signed verify until they expire.
pub const PREVIOUS_KEY_FILE: &str = "jwt.key.previous";
/// Where the first-boot admin password is written.
pub const INITIAL_PASSWORD_FILE: &str = "initial-admin-password";
/// Issuer of the box's own tokens.
pub const ISSUER: &str = "roombox";

/// Display credentials start with this.
pub const DISPLAY_PREFIX: &str = "rbd_";
/// The name a display joins with (the web client's grids do not show it as a person).
pub const DISPLAY_NAME: &str = "Room display";

/// The identity a display joins as.
pub fn display_identity(id: i64) -> String {
    format!("display-{id}")
}

/// The token version every display token carries (see [`TokenVersions`]): revoking
/// a display removes its identity from the map, which refuses its tokens at once.
const DISPLAY_TV: u64 = 1;

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Fill `buf` from the system CSPRNG.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), AuthServiceError> {
    use aws_lc_rs::rand::SecureRandom;
    aws_lc_rs::rand::SystemRandom::new()
        .fill(buf)
        .map_err(|_| AuthServiceError::Internal("no randomness".into()))
}

fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref().to_vec()
}

/// Write `data` to a new file readable by the owner only; fails if it exists.
pub fn write_private_new(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(data)?;
    f.sync_all()?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Load the signing key from the data dir, creating it (0600) on first boot.
pub fn load_or_create_key(data_dir: &Path) -> Result<Vec<u8>, AuthServiceError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| AuthServiceError::Key(data_dir.to_owned(), e.to_string()))?;
    let path = data_dir.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let key = hex::decode(String::from_utf8_lossy(&bytes).trim())
                .map_err(|_| AuthServiceError::Key(path.clone(), "not hex".into()))?;
            if key.len() < sfu_core::auth::MIN_SECRET_LEN {
                return Err(AuthServiceError::Key(path, format!("only {} bytes", key.len())));
            }
            if let Ok(meta) = std::fs::metadata(&path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(path = %path.display(), "signing key was readable by others; fixing to 0600");
                let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = vec![0u8; 64];
            random_bytes(&mut key)?;
            write_private_new(&path, format!("{}\n", hex::encode(&key)).as_bytes())
                .map_err(|e| AuthServiceError::Key(path.clone(), e.to_string()))?;
            tracing::info!(path = %path.display(), "created the token signing key");
            Ok(key)
        }
        Err(e) => Err(AuthServiceError::Key(path, e.to_string())),
    }
}

/// The key id of a signing key: the first 8 bytes of its SHA-256, in hex.
pub fn key_id(key: &[u8]) -> String {
    hex::encode(&sha256(key)[..8])
}

/// Replace `path` with `data`, readable by the owner only (a new file renamed over it).
fn replace_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    write_private_new(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// The retired key and when it stops verifying, if a rotation left one that still does.
fn load_previous_key(data_dir: &Path, now: u64) -> Option<(Vec<u8>, u64)> {
    let text = std::fs::read_to_string(data_dir.join(PREVIOUS_KEY_FILE)).ok()?;
    let (k, t) = text.trim().split_once(' ')?;
    let until: u64 = t.trim().parse().ok()?;
    let key = hex::decode(k).ok()?;
    (until >= now && key.len() >= sfu_core::auth::MIN_SECRET_LEN).then_some((key, until))
}

/// What a key rotation did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyRotation {
    /// The new signing key's id (the `kid` of every token signed from now on).
    pub kid: String,
    /// The retired key's id.
    pub previous_kid: String,
    /// Until when (Unix seconds) tokens signed with the retired key still verify.
    pub previous_valid_until: u64,
}

/// Sign an access token with the data dir's key (the `roomboxd token` command).
pub fn sign_access(key: &[u8], claims: &Claims) -> Result<String, AuthServiceError> {
    Ok(sign_hs256(claims, key)?)
}

/// Errors of the auth service (HTTP status via [`AuthServiceError::status`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthServiceError {
    #[error(transparent)]
    Token(#[from] AuthError),
    #[error("wrong username or password")]
    BadCredentials,
    #[error("too many login attempts; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("the refresh token is unknown, expired or revoked")]
    BadRefresh,
    #[error("the refresh token was already used; every token of this session is now revoked")]
    RefreshReuse,
    #[error("the display credential is unknown or was revoked")]
    BadDisplay,
    #[error("{0}")]
    BadRequest(String),
    #[error("signing key {0}: {1}")]
    Key(PathBuf, String),
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The in-memory copy of every local user's token version.
#[derive(Debug, Default)]
pub struct TokenVersions {
    map: RwLock<HashMap<String, u64>>,
}

impl TokenVersions {
    pub fn set(&self, user: &str, version: u64) {
        if let Ok(mut m) = self.map.write() {
            m.insert(user.to_owned(), version);
        }
    }
    pub fn get(&self, user: &str) -> Option<u64> {
        self.map.read().ok().and_then(|m| m.get(user).copied())
    }
    /// Forget a holder: every token it carries with a `tv` is refused from now on.
    pub fn remove(&self, user: &str) {
        if let Ok(mut m) = self.map.write() {
            m.remove(user);
        }
    }
}

impl RevocationCheck for TokenVersions {
    fn is_revoked(&self, claims: &Claims) -> bool {
        // Only tokens issued to local users carry `tv`; a user that no longer
        // exists has no valid tokens.
        match claims.tv {
            None => false,
            Some(tv) => self.get(&claims.sub).is_none_or(|current| tv < current),
        }
    }
}

/// Per-IP and per-user login limits over a fixed window. Sans-IO: `now` in seconds.
#[derive(Debug)]
pub struct LoginLimiter {
    window: u64,
    max_user_failures: u32,
    max_ip_attempts: u32,
    users: HashMap<String, (u64, u32)>,
    ips: HashMap<IpAddr, (u64, u32)>,
}

impl LoginLimiter {
    pub fn new(window: Duration, max_user_failures: u32, max_ip_attempts: u32) -> Self {
        LoginLimiter {
            window: window.as_secs().max(1),
            max_user_failures,
            max_ip_attempts,
            users: HashMap::new(),
            ips: HashMap::new(),
        }
    }

    fn current(window: u64, entry: &mut (u64, u32), now: u64) {
        if now >= entry.0 + window {
            *entry = (now, 0);
        }
    }

    /// Count an attempt from `ip` for `user`; `Err(retry_after_secs)` when refused.
    pub fn attempt(&mut self, user: &str, ip: IpAddr, now: u64) -> Result<(), u64> {
        if self.ips.len() > 10_000 || self.users.len() > 10_000 {
            let w = self.window;
            self.ips.retain(|_, e| now < e.0 + w);
            self.users.retain(|_, e| now < e.0 + w);
        }
        let w = self.window;
        let ip_e = self.ips.entry(ip).or_insert((now, 0));
        Self::current(w, ip_e, now);
        if ip_e.1 >= self.max_ip_attempts {
            return Err((ip_e.0 + w).saturating_sub(now).max(1));
        }
        ip_e.1 += 1;
        if let Some(u) = self.users.get_mut(user) {
            Self::current(w, u, now);
            if u.1 >= self.max_user_failures {
                return Err((u.0 + w).saturating_sub(now).max(1));
            }
        }
        Ok(())
    }

    pub fn failure(&mut self, user: &str, now: u64) {
        let w = self.window;
        let e = self.users.entry(user.to_owned()).or_insert((now, 0));
        Self::current(w, e, now);
        e.1 += 1;
    }

    pub fn success(&mut self, user: &str) {
        self.users.remove(user);
    }
}

/// What a login or refresh returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub refresh_token: String,
    pub refresh_expires_in: u64,
    pub identity: String,
    /// The room the access token is for (`*` = every room, admins).
    pub room: String,
    pub grants: GrantsDto,
}

/// Room grants, as in the access token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GrantsDto {
    pub publish: bool,
    pub subscribe: bool,
    pub record: bool,
    pub admin: bool,
}

impl From<Grants> for GrantsDto {
    fn from(g: Grants) -> Self {
        GrantsDto { publish: g.publish, subscribe: g.subscribe, record: g.record, admin: g.admin }
    }
}

impl From<GrantsDto> for Grants {
    fn from(g: GrantsDto) -> Self {
        Grants { publish: g.publish, subscribe: g.subscribe, record: g.record, admin: g.admin }
    }
}

/// The verifier of the box's own tokens: `key` (by its id, and for tokens
/// without one) and, after a rotation, the retired key until it expires.
fn local_verifier(
    key: &[u8],
    previous: Option<&(Vec<u8>, u64)>,
    cfg: &AuthConfig,
    versions: Arc<TokenVersions>,
) -> Result<TokenVerifier, AuthServiceError> {
    let mut v = TokenVerifier::new().with_secret_kid(key, &key_id(key), None)?;
    if let Some((old, until)) = previous {
        v = v.with_secret_kid(old, &key_id(old), Some(*until))?;
    }
    Ok(v.with_leeway(cfg.token_leeway.as_secs()).with_revocation(versions))
}

/// The auth service the HTTP layer and the SFU use.
pub struct Auth {
    /// The signing key and the verifier of the box's own tokens (current key,
    /// plus the retired one after a rotation); replaced together on rotation.
    local: RwLock<(Arc<Vec<u8>>, TokenVerifier)>,
    oidc: RwLock<Option<TokenVerifier>>,
    versions: Arc<TokenVersions>,
    store: Store,
    cfg: AuthConfig,
    limiter: Mutex<LoginLimiter>,
    data_dir: PathBuf,
    dummy_hash: String,
    /// Counts JWKS installs, so callers can wait for the provider's keys.
    jwks_generation: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

/// Hash a password with argon2id (CPU-heavy: call off the async runtime).
pub fn hash_password(password: &str) -> Result<String, AuthServiceError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AuthServiceError::Internal(format!("argon2: {e}")))
}

fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(h) => Argon2::default().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

/// Rules for a new password.
pub fn check_new_password(p: &str) -> Result<(), AuthServiceError> {
    if p.chars().count() < 10 {
        return Err(AuthServiceError::BadRequest("a password needs at least 10 characters".into()));
    }
    if p.len() > 1024 {
        return Err(AuthServiceError::BadRequest("a password may have at most 1024 bytes".into()));
    }
    Ok(())
}

/// A random password for first boot: 20 characters from an unambiguous alphabet.
pub fn generate_password() -> Result<String, AuthServiceError> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789";
    let mut raw = [0u8; 20];
    random_bytes(&mut raw)?;
    Ok(raw.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect())
}

impl Auth {
    /// Build the service: load the key, fill the token-version cache, load the JWKS file if any.
    pub async fn new(data_dir: &Path, cfg: AuthConfig, store: Store) -> Result<Arc<Auth>, AuthServiceError> {
        let key = load_or_create_key(data_dir)?;
        let versions = Arc::new(TokenVersions::default());
        for (user, v) in store.call(|c| q::token_versions(c)).await? {
            versions.set(&user, v);
        }
        // Display tokens carry `tv` 1 and are valid while their display is not revoked.
        for d in store.call(|c| q::list_displays(c)).await? {
            if d.revoked_at.is_none() {
                versions.set(&display_identity(d.id), DISPLAY_TV);
            }
        }
        let previous = load_previous_key(data_dir, unix_now());
        let local = local_verifier(&key, previous.as_ref(), &cfg, versions.clone())?;
        let dummy_hash = tokio::task::spawn_blocking(|| hash_password("not-a-real-password-at-all"))
            .await
            .map_err(|e| AuthServiceError::Internal(e.to_string()))??;
        let auth = Auth {
            local: RwLock::new((Arc::new(key), local)),
            oidc: RwLock::new(None),
            versions,
            limiter: Mutex::new(LoginLimiter::new(
                cfg.login_window,
                cfg.login_max_failures_per_user,
                cfg.login_max_attempts_per_ip,
            )),
            cfg,
            store,
            data_dir: data_dir.to_owned(),
            dummy_hash,
            jwks_generation: tokio::sync::watch::channel(0).0,
        };
        if let Some(o) = &auth.cfg.oidc
            && let Some(file) = &o.jwks_file
        {
            let text = std::fs::read_to_string(file)
                .map_err(|e| AuthServiceError::BadRequest(format!("JWKS file {}: {e}", file.display())))?;
            auth.install_jwks(&text)?;
        }
        Ok(Arc::new(auth))
    }

    pub fn config(&self) -> &AuthConfig {
        &self.cfg
    }

    /// The verifier for the box's own tokens, with revocation (hand it to the SFU).
    pub fn local_verifier(&self) -> TokenVerifier {
        self.local.read().map(|l| l.1.clone()).unwrap_or_default()
    }

    /// Rotate the signing key without downtime: a new key signs every token
    /// from now on; the old one keeps verifying the tokens it signed until the
    /// longest of them expires (`auth.max_issued_ttl`, `auth.access_ttl`, plus
    /// the leeway), then nothing. Both files are written (0600) before the
    /// switch, so a restart keeps the same state.
    pub fn rotate_key(&self, now: u64) -> Result<KeyRotation, AuthServiceError> {
        let mut guard = self.local.write().map_err(|_| poisoned())?;
        let old = guard.0.clone();
        let until = now
            + self.cfg.max_issued_ttl.max(self.cfg.access_ttl).as_secs()
            + self.cfg.token_leeway.as_secs();
        let mut key = vec![0u8; 64];
        random_bytes(&mut key)?;
        let prev_path = self.data_dir.join(PREVIOUS_KEY_FILE);
        replace_private(&prev_path, format!("{} {until}\n", hex::encode(&*old)).as_bytes())
            .map_err(|e| AuthServiceError::Key(prev_path.clone(), e.to_string()))?;
        let key_path = self.data_dir.join(KEY_FILE);
        replace_private(&key_path, format!("{}\n", hex::encode(&key)).as_bytes())
            .map_err(|e| AuthServiceError::Key(key_path.clone(), e.to_string()))?;
        let verifier = local_verifier(&key, Some(&(old.to_vec(), until)), &self.cfg, self.versions.clone())?;
        let r = KeyRotation { kid: key_id(&key), previous_kid: key_id(&old), previous_valid_until: until };
        *guard = (Arc::new(key), verifier);
        tracing::info!(kid = %r.kid, previous_kid = %r.previous_kid, until, "signing key rotated");
        Ok(r)
    }

    /// Changes each time the identity provider's keys are (re)installed.
    pub fn jwks_updates(&self) -> tokio::sync::watch::Receiver<u64> {
        self.jwks_generation.subscribe()
    }

    pub fn versions(&self) -> Arc<TokenVersions> {
        self.versions.clone()
    }

    /// Replace the identity provider's keys with the JWKS in `json`.
    pub fn install_jwks(&self, json: &str) -> Result<usize, AuthServiceError> {
        let Some(o) = &self.cfg.oidc else {
            return Ok(0);
        };
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_str(json).map_err(|e| AuthServiceError::BadRequest(format!("JWKS: {e}")))?;
        let n = set.keys.len();
        let mut v = TokenVerifier::new()
            .with_jwks(&set)?
            .with_issuer(o.issuer.clone())
            .with_leeway(self.cfg.token_leeway.as_secs());
        if !o.audience.is_empty() {
            v = v.with_audience(o.audience.clone());
        }
        if let Ok(mut slot) = self.oidc.write() {
            *slot = Some(v);
        }
        self.jwks_generation.send_modify(|g| *g += 1);
        Ok(n)
    }

    /// Verify a bearer token: the box's own first, then the identity provider's.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        let local = self.local_verifier();
        match local.verify(token, now) {
            Ok(c) => Ok(c),
            Err(e @ (AuthError::AlgorithmNotAllowed(_) | AuthError::UnknownKey(_))) => {
                let oidc = self.oidc.read().ok().and_then(|o| o.clone());
                match oidc {
                    Some(v) => v.verify(token, now),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// [`verify`](Self::verify), then check that the token is for `room`.
    pub fn verify_for_room(&self, token: &str, room: &str, now: u64) -> Result<Claims, AuthError> {
        let claims = self.verify(token, now)?;
        if !claims.allows_room(room) {
            return Err(AuthError::WrongRoom { token_room: claims.room, room: room.to_owned() });
        }
        Ok(claims)
    }

    /// Sign an access token.
    #[allow(clippy::too_many_arguments)]
    pub fn issue_access(
        &self,
        identity: &str,
        room: &str,
        grants: Grants,
        ttl: Duration,
        tv: Option<u64>,
        name: Option<String>,
        now: u64,
    ) -> Result<(String, Claims), AuthServiceError> {
        let mut c = Claims::new(identity, room, grants, now, ttl.as_secs());
        c.iss = Some(ISSUER.into());
        c.tv = tv;
        c.name = name;
        let key = self.local.read().map_err(|_| poisoned())?.0.clone();
        Ok((sign_hs256_kid(&c, &key, &key_id(&key))?, c))
    }

    /// Make a display credential for the TV of `room`: a long random secret
    /// the `/display` page keeps and exchanges ([`Auth::display_token`]) for
    /// short subscribe-only access tokens, for as long as it is not revoked.
    /// Only its SHA-256 is stored. Returns the row and the credential (shown once).
    pub async fn create_display(
        &self,
        room: &str,
        name: &str,
        by: &str,
        now: u64,
    ) -> Result<(crate::store::DisplayRow, String), AuthServiceError> {
        let mut raw = [0u8; 32];
        random_bytes(&mut raw)?;
        let credential = format!("{DISPLAY_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
        let hash = sha256(credential.as_bytes());
        let (room, name, by) = (room.to_owned(), name.to_owned(), by.to_owned());
        let row = self
            .store
            .call(move |c| {
                crate::store::atomic(c, |c| {
                    let row = q::create_display(c, &room, &name, &hash, &by, now as i64)?;
                    q::audit(
                        c,
                        now as i64,
                        &by,
                        "display_created",
                        Some(&format!("{room}/{}", display_identity(row.id))),
                        Some(&name),
                        None,
                    )?;
                    Ok(row)
                })
            })
            .await?;
        self.versions.set(&display_identity(row.id), DISPLAY_TV);
        Ok((row, credential))
    }

    /// Revoke a display: no new tokens for its credential, and the tokens it
    /// holds are refused from now on (the SFU and the API check token versions).
    pub async fn revoke_display(
        &self,
        id: i64,
        actor: &str,
        now: u64,
    ) -> Result<crate::store::DisplayRow, AuthServiceError> {
        let actor = actor.to_owned();
        let row = self
            .store
            .call(move |c| {
                atomic(c, |c| {
                    let row = q::revoke_display(c, id, now as i64)?;
                    let target = format!("{}/{}", row.room, display_identity(id));
                    q::audit(c, now as i64, &actor, "display_revoked", Some(&target), None, None)?;
                    Ok(row)
                })
            })
            .await?;
        self.versions.remove(&display_identity(id));
        Ok(row)
    }

    /// Exchange a display credential for an access token: identity
    /// `display-{id}`, name [`DISPLAY_NAME`], subscribe only, `auth.access_ttl`.
    pub async fn display_token(
        &self,
        credential: &str,
        now: u64,
    ) -> Result<(String, Claims, crate::store::DisplayRow), AuthServiceError> {
        if !credential.starts_with(DISPLAY_PREFIX) || credential.len() > 100 {
            return Err(AuthServiceError::BadDisplay);
        }
        let hash = sha256(credential.as_bytes());
        let row = self
            .store
            .call(move |c| {
                let row = q::find_display(c, &hash)?;
                if let Some(r) = &row
                    && r.revoked_at.is_none()
                {
                    q::touch_display(c, r.id, now as i64)?;
                }
                Ok(row)
            })
            .await?
            .filter(|r| r.revoked_at.is_none())
            .ok_or(AuthServiceError::BadDisplay)?;
        let grants = Grants { subscribe: true, ..Grants::default() };
        let (token, claims) = self.issue_access(
            &display_identity(row.id),
            &row.room,
            grants,
            self.cfg.access_ttl,
            Some(DISPLAY_TV),
            Some(DISPLAY_NAME.into()),
            now,
        )?;
        Ok((token, claims, row))
    }

    /// First boot: create `admin` with a random password written to the data dir.
    /// Returns the password when it was created now.
    pub async fn ensure_first_admin(&self) -> Result<Option<String>, AuthServiceError> {
        if self.store.call(|c| q::user_count(c)).await? > 0 {
            return Ok(None);
        }
        let password = generate_password()?;
        let pw = password.clone();
        let hash = tokio::task::spawn_blocking(move || hash_password(&pw))
            .await
            .map_err(|e| AuthServiceError::Internal(e.to_string()))??;
        let path = self.data_dir.join(INITIAL_PASSWORD_FILE);
        let _ = std::fs::remove_file(&path);
        write_private_new(&path, format!("{password}\n").as_bytes())
            .map_err(|e| AuthServiceError::Key(path.clone(), e.to_string()))?;
        let now = unix_now() as i64;
        let user = self
            .store
            .call(move |c| {
                atomic(c, |c| {
                    let u = q::create_user(c, "admin", &hash, Role::Admin, now)?;
                    q::audit(c, now, "roomboxd", "first_boot_admin", Some("admin"), None, None)?;
                    Ok(u)
                })
            })
            .await?;
        self.versions.set(&user.username, user.token_version);
        tracing::warn!(
            path = %path.display(),
            "first boot: created user `admin`; its password is in this file (read it once, then change it)"
        );
        Ok(Some(password))
    }

    /// Log in a local user. `room`: members must name one; admins get every room.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        room: Option<&str>,
        ip: IpAddr,
        now: u64,
    ) -> Result<TokenPair, AuthServiceError> {
        if let Err(retry) = self.limiter.lock().map_err(|_| poisoned())?.attempt(username, ip, now) {
            tracing::warn!(user = username, "login rate-limited");
            return Err(AuthServiceError::RateLimited { retry_after_secs: retry });
        }
        let name = username.to_owned();
        let user = self.store.call(move |c| q::get_user(c, &name)).await?;
        let (hash, known) = match &user {
            Some(u) => (u.password_hash.clone(), true),
            None => (self.dummy_hash.clone(), false),
        };
        let pw = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || verify_password(&pw, &hash))
            .await
            .map_err(|e| AuthServiceError::Internal(e.to_string()))?;
        let (Some(user), true, true) = (user, ok, known) else {
            self.limiter.lock().map_err(|_| poisoned())?.failure(username, now);
            let (u, ip_s) = (username.to_owned(), ip.to_string());
            let _ = self
                .store
                .call(move |c| q::audit(c, now as i64, &u, "login_failed", None, None, Some(&ip_s)))
                .await;
            return Err(AuthServiceError::BadCredentials);
        };
        self.limiter.lock().map_err(|_| poisoned())?.success(username);
        let (room, grants) = match (user.role, room) {
            (Role::Admin, None) => {
                ("*".to_owned(), Grants { publish: true, subscribe: true, record: true, admin: true })
            }
            (Role::Admin, Some(r)) => {
                (r.to_owned(), Grants { publish: true, subscribe: true, record: true, admin: true })
            }
            (Role::Member, Some(r)) => {
                (r.to_owned(), Grants { publish: true, subscribe: true, ..Grants::default() })
            }
            (Role::Member, None) => {
                return Err(AuthServiceError::BadRequest("members must name the room to join".into()));
            }
        };
        if room != "*" && !crate::names::valid_room(&room) {
            return Err(AuthServiceError::BadRequest(format!("room: {}", crate::names::ROOM_RULE)));
        }
        self.versions.set(&user.username, user.token_version);
        let family = {
            let mut b = [0u8; 16];
            random_bytes(&mut b)?;
            hex::encode(b)
        };
        let ip_s = ip.to_string();
        let u = user.username.clone();
        let pair = self
            .new_pair(&user.username, user.id, user.token_version, &room, grants, &family, None, now)
            .await?;
        let _ = self.store.call(move |c| q::audit(c, now as i64, &u, "login", None, None, Some(&ip_s))).await;
        Ok(pair)
    }

    #[allow(clippy::too_many_arguments)]
    /// Make a new access + refresh pair and store the refresh token. With
    /// `spend`, the refresh token being rotated is marked used in the same
    /// transaction; if it was already used, its whole family is revoked
    /// instead (and committed) and [`AuthServiceError::RefreshReuse`] returned.
    #[allow(clippy::too_many_arguments)]
    async fn new_pair(
        &self,
        username: &str,
        user_id: i64,
        tv: u64,
        room: &str,
        grants: Grants,
        family: &str,
        spend: Option<i64>,
        now: u64,
    ) -> Result<TokenPair, AuthServiceError> {
        let (access, claims) =
            self.issue_access(username, room, grants, self.cfg.access_ttl, Some(tv), None, now)?;
        let mut raw = [0u8; 32];
        random_bytes(&mut raw)?;
        let refresh = format!("rbr_{}", URL_SAFE_NO_PAD.encode(raw));
        let hash = sha256(refresh.as_bytes());
        let grants_json = serde_json::to_string(&GrantsDto::from(grants))
            .map_err(|e| AuthServiceError::Internal(e.to_string()))?;
        let refresh_ttl = self.cfg.refresh_ttl.as_secs();
        let (fam, room_s) = (family.to_owned(), room.to_owned());
        let stored = self
            .store
            .call(move |c| {
                atomic(c, |c| {
                    if let Some(old) = spend
                        && !q::mark_refresh_used(c, old, now as i64)?
                    {
                        q::revoke_family(c, &fam, now as i64)?;
                        let what = "refresh_reuse_revoked_family";
                        q::audit(c, now as i64, "roomboxd", what, Some(&fam), None, None)?;
                        return Ok(false);
                    }
                    q::insert_refresh(
                        c,
                        user_id,
                        &hash,
                        &fam,
                        tv,
                        &room_s,
                        &grants_json,
                        now as i64,
                        (now + refresh_ttl) as i64,
                    )?;
                    Ok(true)
                })
            })
            .await?;
        if !stored {
            tracing::warn!(user = username, "a rotated refresh token was reused; its family is revoked");
            return Err(AuthServiceError::RefreshReuse);
        }
        Ok(TokenPair {
            access_token: access,
            token_type: "Bearer".into(),
            expires_in: claims.exp - now,
            refresh_token: refresh,
            refresh_expires_in: refresh_ttl,
            identity: username.to_owned(),
            room: room.to_owned(),
            grants: grants.into(),
        })
    }

    /// Rotate a refresh token: the old one is spent, a new pair is returned.
    /// A spent token presented again revokes its whole family.
    pub async fn refresh(&self, token: &str, now: u64) -> Result<TokenPair, AuthServiceError> {
        if !token.starts_with("rbr_") || token.len() > 100 {
            return Err(AuthServiceError::BadRefresh);
        }
        let hash = sha256(token.as_bytes());
        let row =
            self.store.call(move |c| q::find_refresh(c, &hash)).await?.ok_or(AuthServiceError::BadRefresh)?;
        if row.revoked_at.is_some() || row.expires_at <= now as i64 {
            return Err(AuthServiceError::BadRefresh);
        }
        let current = self.versions.get(&row.username);
        if current != Some(row.token_version) {
            return Err(AuthServiceError::BadRefresh);
        }
        let grants: GrantsDto = serde_json::from_str(&row.grants).unwrap_or_default();
        self.new_pair(
            &row.username,
            row.user_id,
            row.token_version,
            &row.room,
            grants.into(),
            &row.family,
            Some(row.id),
            now,
        )
        .await
    }

    /// Log out: revoke the refresh token's family. Unknown tokens are ignored.
    pub async fn logout(&self, token: &str, now: u64) -> Result<(), AuthServiceError> {
        let hash = sha256(token.as_bytes());
        self.store
            .call(move |c| {
                atomic(c, |c| {
                    if let Some(row) = q::find_refresh(c, &hash)? {
                        q::revoke_family(c, &row.family, now as i64)?;
                    }
                    Ok(())
                })
            })
            .await?;
        Ok(())
    }

    /// Revoke every token of `username` (bump its token version).
    pub async fn revoke_user(&self, username: &str, actor: &str, now: u64) -> Result<u64, AuthServiceError> {
        let (u, a) = (username.to_owned(), actor.to_owned());
        let v = self
            .store
            .call(move |c| {
                atomic(c, |c| {
                    let v = q::bump_token_version(c, &u, now as i64)?;
                    q::audit(c, now as i64, &a, "revoke_tokens", Some(&u), None, None)?;
                    Ok(v)
                })
            })
            .await?;
        self.versions.set(username, v);
        Ok(v)
    }

    /// Change a password (checks the old one, revokes every existing token).
    pub async fn change_password(
        &self,
        username: &str,
        old: &str,
        new: &str,
        ip: IpAddr,
        now: u64,
    ) -> Result<(), AuthServiceError> {
        check_new_password(new)?;
        if let Err(retry) = self.limiter.lock().map_err(|_| poisoned())?.attempt(username, ip, now) {
            return Err(AuthServiceError::RateLimited { retry_after_secs: retry });
        }
        let name = username.to_owned();
        let user =
            self.store.call(move |c| q::get_user(c, &name)).await?.ok_or(AuthServiceError::BadCredentials)?;
        let (old_s, hash) = (old.to_owned(), user.password_hash.clone());
        let ok = tokio::task::spawn_blocking(move || verify_password(&old_s, &hash))
            .await
            .map_err(|e| AuthServiceError::Internal(e.to_string()))?;
        if !ok {
            self.limiter.lock().map_err(|_| poisoned())?.failure(username, now);
            return Err(AuthServiceError::BadCredentials);
        }
        let new_s = new.to_owned();
        let new_hash = tokio::task::spawn_blocking(move || hash_password(&new_s))
            .await
            .map_err(|e| AuthServiceError::Internal(e.to_string()))??;
        let u = username.to_owned();
        let v = self
            .store
            .call(move |c| {
                atomic(c, |c| {
                    let v = q::set_password(c, &u, &new_hash, now as i64)?;
                    q::audit(c, now as i64, &u, "password_changed", Some(&u), None, None)?;
                    Ok(v)
                })
            })
            .await?;
        self.versions.set(username, v);
        let _ = std::fs::remove_file(self.data_dir.join(INITIAL_PASSWORD_FILE));
        Ok(())
    }
}

fn poisoned() -> AuthServiceError {
    AuthServiceError::Internal("lock poisoned".into())
}

/// Set (or create) a local user's password from the console (`roomboxd passwd`).
pub fn set_password_offline(
    store: &Store,
    username: &str,
    password: &str,
    role: Role,
) -> Result<u64, AuthServiceError> {
    check_new_password(password)?;
    if !crate::names::valid_identity(username) {
        return Err(AuthServiceError::BadRequest(format!("username: {}", crate::names::IDENTITY_RULE)));
    }
    let hash = hash_password(password)?;
    let u = username.to_owned();
    let now = unix_now() as i64;
    Ok(store.call_blocking(move |c| {
        atomic(c, |c| {
            let v = match q::get_user(c, &u)? {
                Some(_) => q::set_password(c, &u, &hash, now)?,
                None => q::create_user(c, &u, &hash, role, now)?.token_version,
            };
            q::audit(c, now, "console", "password_set", Some(&u), None, None)?;
            Ok(v)
        })
    })?)
}

/// Fetch the identity provider's JWKS over HTTPS (on-prem URL).
pub async fn fetch_jwks(o: &OidcConfig) -> Result<String, AuthServiceError> {
    let Some(url) = &o.jwks_url else {
        return Err(AuthServiceError::BadRequest("no jwks_url".into()));
    };
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(10)).no_proxy();
    if let Some(ca) = &o.ca_file {
        let pem =
            std::fs::read(ca).map_err(|e| AuthServiceError::BadRequest(format!("{}: {e}", ca.display())))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| AuthServiceError::BadRequest(format!("{}: {e}", ca.display())))?;
        b = b.tls_certs_only([cert]);
    }
    let client = b.build().map_err(|e| AuthServiceError::Internal(e.to_string()))?;
    let resp = client
        .get(url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| AuthServiceError::Internal(format!("JWKS fetch {url}: {e}")))?;
    let text = resp.text().await.map_err(|e| AuthServiceError::Internal(e.to_string()))?;
    if text.len() > 1024 * 1024 {
        return Err(AuthServiceError::BadRequest("JWKS larger than 1 MiB".into()));
    }
    Ok(text)
}

/// Keep the identity provider's keys fresh: fetch now, then every `refresh`
/// (every minute while fetches fail). Ends when `shutdown` fires.
pub async fn jwks_refresher(auth: Arc<Auth>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let Some(o) = auth.cfg.oidc.clone() else { return };
    if o.jwks_url.is_none() {
        return;
    }
    loop {
        let wait = match fetch_jwks(&o).await.and_then(|t| auth.install_jwks(&t)) {
            Ok(n) => {
                tracing::info!(keys = n, "identity provider JWKS loaded");
                o.refresh
            }
            Err(e) => {
                tracing::warn!(error = %e, "identity provider JWKS not loaded; retrying in 60 s");
                Duration::from_secs(60)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// The SFU's signaling (WHIP, WHEP, the room protocol) accepts what the API
/// accepts: the box's own tokens with revocation, then the identity provider's.
impl TokenCheck for Auth {
    fn verify_for_room(&self, token: &str, room: &str, now: u64) -> Result<Claims, AuthError> {
        Auth::verify_for_room(self, token, room, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    #[test]
    fn per_user_failures_lock_the_user_until_the_window_ends() {
        let mut l = LoginLimiter::new(Duration::from_secs(60), 3, 100);
        for _ in 0..3 {
            assert!(l.attempt("admin", IP, 1000).is_ok());
            l.failure("admin", 1000);
        }
        assert_eq!(l.attempt("admin", IP, 1010), Err(50));
        assert!(l.attempt("someone-else", IP, 1010).is_ok(), "other users are not locked");
        assert!(l.attempt("admin", IP, 1060).is_ok(), "window over");
    }

    #[test]
    fn per_ip_attempts_are_capped_across_usernames() {
        let mut l = LoginLimiter::new(Duration::from_secs(60), 100, 5);
        for i in 0..5 {
            assert!(l.attempt(&format!("u{i}"), IP, 0).is_ok());
        }
        assert!(l.attempt("u9", IP, 1).is_err());
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(l.attempt("u9", other, 1).is_ok());
    }

    #[test]
    fn a_success_clears_the_users_failures() {
        let mut l = LoginLimiter::new(Duration::from_secs(60), 2, 100);
        l.failure("a", 0);
        l.success("a");
        l.failure("a", 0);
        assert!(l.attempt("a", IP, 0).is_ok());
    }

    #[test]
    fn token_versions_revoke_older_tokens_and_deleted_users() {
        let v = TokenVersions::default();
        v.set("alice", 3);
        let mut c = Claims::new("alice", "demo", Grants::default(), 0, 60);
        assert!(!v.is_revoked(&c), "guest tokens without tv are not checked");
        c.tv = Some(2);
        assert!(v.is_revoked(&c));
        c.tv = Some(3);
        assert!(!v.is_revoked(&c));
        c.sub = "ghost".into();
        assert!(v.is_revoked(&c));
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a phc string"));
    }

    #[test]
    fn the_key_file_is_created_private_and_reused() {
        let d = tempfile::tempdir().unwrap();
        let k1 = load_or_create_key(d.path()).unwrap();
        let mode = std::fs::metadata(d.path().join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_key(d.path()).unwrap(), k1);
        assert_eq!(k1.len(), 64);
    }
}
