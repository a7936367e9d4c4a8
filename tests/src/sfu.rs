//! The SFU in process, for browser tests: `sfu_core::Sfu` on a UDP port of the
//! namespace, its signaling routes and the web client on one HTTP server.

use std::net::{IpAddr, SocketAddr};

use sfu_core::{Sfu, SfuConfig, TokenVerifier};

use crate::TEST_SECRET;
use crate::netns::LAN_IP;
use crate::web::WebServer;

pub struct TestSfu {
    pub sfu: Sfu,
    pub web: WebServer,
    pub registry: prometheus::Registry,
    stopped: bool,
}

impl TestSfu {
    /// The SFU advertising [`LAN_IP`] only.
    pub async fn start() -> anyhow::Result<TestSfu> {
        Self::start_with(|_| {}).await
    }

    /// The SFU with its UDP port on every address of the namespace, advertising
    /// [`LAN_IP`] (change `candidate_ips` in `tweak` to add linked namespaces'
    /// addresses), HTTP on every address too (`http://127.0.0.1:PORT` is a
    /// secure origin for the pages; other namespaces use their link address).
    pub async fn start_with(tweak: impl FnOnce(&mut SfuConfig)) -> anyhow::Result<TestSfu> {
        Self::start_at(SocketAddr::from(([0, 0, 0, 0], 0)), tweak).await
    }

    /// As [`start_with`](Self::start_with), with HTTP on `http` (to restart on the same port).
    pub async fn start_at(http: SocketAddr, tweak: impl FnOnce(&mut SfuConfig)) -> anyhow::Result<TestSfu> {
        let mut config = SfuConfig {
            udp_bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            tcp_bind: None,
            candidate_ips: vec![IpAddr::V4(LAN_IP)],
            ..SfuConfig::default()
        };
        tweak(&mut config);
        let registry = prometheus::Registry::new();
        let sfu = Sfu::start(config, TokenVerifier::hs256(TEST_SECRET)?, &registry).await?;
        let web = WebServer::start(http, Some(sfu.router())).await?;
        Ok(TestSfu { sfu, web, registry, stopped: false })
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.web.addr.port())
    }

    /// `http://{ip}:PORT{path}`, for browsers in another namespace.
    pub fn url_on(&self, ip: IpAddr, path: &str) -> String {
        format!("http://{}:{}{path}", crate::netns::url_host(ip), self.web.addr.port())
    }
}

impl TestSfu {
    /// Shut the SFU down (peers are told `closing`) and stop serving HTTP.
    pub async fn stop(mut self) {
        self.sfu.shutdown().await;
        self.web.stop().await;
        self.stopped = true;
    }
}

impl Drop for TestSfu {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        let sfu = self.sfu.clone();
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move { sfu.shutdown().await });
        }
    }
}
