//! The HTTP side of WHIP/WHEP (RFC 9725): POST an SDP offer, get 201 with the
//! answer and a `Location`.

use std::time::Duration;

use anyhow::{Context, bail};

/// A WHIP/WHEP client for one server.
#[derive(Clone)]
pub struct Whip {
    http: reqwest::Client,
    base: String,
}

/// The server's reply to an offer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub sdp: String,
    pub location: Option<String>,
}

impl Whip {
    pub fn new(base: impl Into<String>) -> anyhow::Result<Whip> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build()?;
        Ok(Whip { http, base: base.into() })
    }

    /// POST `offer` to `path` (e.g. `/whip/room`), with an optional bearer token
    /// and identity header (the floor names publishers by `X-Identity`).
    pub async fn offer(
        &self,
        path: &str,
        offer: &str,
        token: Option<&str>,
        identity: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let mut req = self
            .http
            .post(format!("{}{}", self.base, path))
            .header("content-type", "application/sdp")
            .body(offer.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(i) = identity {
            req = req.header("x-identity", i);
        }
        let resp = req.send().await.with_context(|| format!("POST {path}"))?;
        let status = resp.status();
        let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = resp.text().await?;
        if status.as_u16() != 201 && status.as_u16() != 200 {
            bail!("POST {path}: {status}: {}", body.chars().take(300).collect::<String>());
        }
        Ok(Answer { sdp: body, location })
    }

    pub async fn get_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let r = self.http.get(format!("{}{}", self.base, path)).send().await?;
        Ok(r.json().await?)
    }
}
