//! Tokens of an on-prem identity provider, verified through its JWKS; and the
//! HS-vs-RS key confusion attack (a token "signed" HS256 with the provider's
//! public RSA key as the HMAC secret) refused.

mod common;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use roombox::config::OidcConfig;
use sfu_core::auth::{Claims, Grants, sign_hs256};

const ISSUER: &str = "https://idp.example.internal/realms/rooms";

struct Idp {
    private_pem: String,
    public_pem: String,
    jwks: String,
}

fn pem(tag: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN {tag}-----\n{}\n-----END {tag}-----\n", lines.join("\n"))
}

fn idp() -> Idp {
    let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&kp).unwrap();
    let public = kp.public_key();
    let spki = AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(public).unwrap();
    let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
    let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
    Idp {
        private_pem: pem("PRIVATE KEY", pkcs8.as_ref()),
        public_pem: pem("PUBLIC KEY", spki.as_ref()),
        jwks: serde_json::json!({"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "n": n, "e": e}]})
            .to_string(),
    }
}

fn idp_claims() -> Claims {
    let now = roombox::auth::unix_now();
    let mut c = Claims::new(
        "dana@example.internal",
        "demo",
        Grants { subscribe: true, ..Grants::default() },
        now,
        300,
    );
    c.iss = Some(ISSUER.into());
    c.aud = Some("roombox".into());
    c
}

fn rs256(idp: &Idp, claims: &Claims) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("k1".into());
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_rsa_pem(idp.private_pem.as_bytes()).unwrap()).unwrap()
}

#[tokio::test]
async fn provider_tokens_verify_and_key_confusion_is_refused() {
    let idp = idp();
    let dir = tempfile::tempdir().unwrap();
    let jwks_path = dir.path().join("idp-jwks.json");
    std::fs::write(&jwks_path, &idp.jwks).unwrap();
    let mut cfg = common::config(dir.path());
    cfg.auth.oidc = Some(OidcConfig {
        issuer: ISSUER.into(),
        audience: "roombox".into(),
        jwks_file: Some(jwks_path),
        ..OidcConfig::default()
    });
    let d = common::start_with(cfg, dir).await;

    // A real provider token works.
    let good = rs256(&idp, &idp_claims());
    assert_eq!(d.get("/api/v1/rooms/demo", Some(&good)).await.status(), 200);

    // HS-vs-RS confusion: HS256 "signed" with the provider's public key (PEM and DER).
    for secret in [
        idp.public_pem.as_bytes().to_vec(),
        STANDARD
            .decode(idp.public_pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>())
            .unwrap(),
    ] {
        let forged = sign_hs256(&idp_claims(), &secret).unwrap();
        let r = d.get("/api/v1/rooms/demo", Some(&forged)).await;
        assert_eq!(r.status(), 401, "HS256 with the RSA public key as secret must fail");
        assert_eq!(common::error_code(r).await, "invalid_token");
    }

    // Wrong issuer, wrong audience, expired, another key: refused.
    let mut c = idp_claims();
    c.iss = Some("https://evil.example".into());
    assert_eq!(d.get("/api/v1/rooms/demo", Some(&rs256(&idp, &c))).await.status(), 401);
    let mut c = idp_claims();
    c.aud = Some("someone-else".into());
    assert_eq!(d.get("/api/v1/rooms/demo", Some(&rs256(&idp, &c))).await.status(), 401);
    let mut c = idp_claims();
    c.exp = c.iat - 3600;
    assert_eq!(d.get("/api/v1/rooms/demo", Some(&rs256(&idp, &c))).await.status(), 401);
    let other = self::idp();
    assert_eq!(d.get("/api/v1/rooms/demo", Some(&rs256(&other, &idp_claims()))).await.status(), 401);
    // The provider's token is still bound to its room.
    assert_eq!(d.get("/api/v1/rooms/boardroom", Some(&good)).await.status(), 403);

    // The SFU's signaling takes the same tokens: WHEP with the provider's token gets
    // past auth to the SDP check (400 for this offer), a forged one stops at 401.
    let whep = |token: String| {
        d.client
            .post(d.url("/whep/demo"))
            .bearer_auth(token)
            .header("content-type", "application/sdp")
            .body("v=0\r\nnot an offer\r\n")
            .send()
    };
    assert_eq!(whep(good.clone()).await.unwrap().status(), 400, "provider token accepted by WHEP");
    let forged = sign_hs256(&idp_claims(), idp.public_pem.as_bytes()).unwrap();
    assert_eq!(whep(forged).await.unwrap().status(), 401, "forged token refused by WHEP");
    let mut c = idp_claims();
    c.room = "boardroom".into();
    assert_eq!(whep(rs256(&idp, &c)).await.unwrap().status(), 403, "provider token for another room");
    d.running.shutdown().await;
}

#[tokio::test]
async fn a_jwks_with_a_symmetric_key_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(
        &jwks_path,
        r#"{"keys":[{"kty":"oct","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA","alg":"HS256"}]}"#,
    )
    .unwrap();
    let mut cfg = common::config(dir.path());
    cfg.auth.oidc =
        Some(OidcConfig { issuer: ISSUER.into(), jwks_file: Some(jwks_path), ..OidcConfig::default() });
    let err = roombox::daemon::start(cfg).await.err().expect("refused");
    assert!(err.to_string().contains("symmetric"), "{err}");
}

/// The provider's JWKS from an on-prem HTTPS URL, trusted through `ca_file`,
/// fetched in the background at start.
#[tokio::test]
async fn the_jwks_is_fetched_from_an_https_url_at_start() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let idp = idp();
    let dir = tempfile::tempdir().unwrap();
    // The provider: a real HTTPS server on loopback with its own certificate.
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let ca = dir.path().join("idp-ca.pem");
    std::fs::write(&ca, ck.cert.pem()).unwrap();
    let rc = axum_server::tls_rustls::RustlsConfig::from_pem(
        ck.cert.pem().into_bytes(),
        ck.signing_key.serialize_pem().into_bytes(),
    )
    .await
    .unwrap();
    let jwks = idp.jwks.clone();
    let app = axum::Router::new().route(
        "/certs",
        axum::routing::get(move || {
            let j = jwks.clone();
            async move { ([("content-type", "application/json")], j) }
        }),
    );
    let handle = axum_server::Handle::new();
    let server = tokio::spawn(
        axum_server::bind_rustls("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap(), rc)
            .handle(handle.clone())
            .serve(app.into_make_service()),
    );
    let addr = handle.listening().await.unwrap();

    let mut cfg = common::config(dir.path());
    cfg.auth.oidc = Some(OidcConfig {
        issuer: ISSUER.into(),
        audience: "roombox".into(),
        jwks_url: Some(format!("https://127.0.0.1:{}/certs", addr.port())),
        ca_file: Some(ca),
        ..OidcConfig::default()
    });
    let d = common::start_with(cfg, dir).await;
    let good = rs256(&idp, &idp_claims());
    let mut updates = d.running.state.auth.jwks_updates();
    tokio::time::timeout(std::time::Duration::from_secs(20), updates.wait_for(|g| *g > 0))
        .await
        .expect("the JWKS is fetched within 20 s")
        .unwrap();
    let status = d.get("/api/v1/rooms/demo", Some(&good)).await.status();
    assert_eq!(status, 200, "the provider's token verifies once its JWKS is fetched");
    d.running.shutdown().await;
    handle.shutdown();
    let _ = server.await;
}
