//! A real Mosquitto for fleet tests: a test CA, server and client certificates
//! (rcgen), TLS with `require_certificate` and `use_identity_as_username`, and a
//! pattern ACL so a device (its certificate's CN) reaches only `roombox/<id>/#`.
//! Also an MQTT client over the same TLS that collects what it receives.
//! (Shared with firmware-app/tests/fleet.rs through `#[path]`.)
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rumqttc::{AsyncClient, Packet, QoS};
use tokio::sync::mpsc;

/// The fleet operator's CN: the ACL lets it reach every device.
pub const OPERATOR: &str = "fleet-operator";

/// A CA and the files it made, in one directory.
pub struct Pki {
    pub dir: PathBuf,
    ca_key: KeyPair,
    ca_params: CertificateParams,
}

/// A client's files.
#[derive(Clone, Debug)]
pub struct ClientFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, "roombox test fleet CA");
        p.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let cert = p.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        Pki { dir: dir.to_owned(), ca_key, ca_params: p }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn issue(&self, name: &str, cn: &str, server: bool) -> ClientFiles {
        let key = KeyPair::generate().unwrap();
        let sans = if server { vec!["localhost".to_string(), "127.0.0.1".to_string()] } else { Vec::new() };
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = p.signed_by(&key, &issuer).unwrap();
        let files = ClientFiles {
            ca: self.ca(),
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    /// A client certificate whose CN is `cn` (a device id or [`OPERATOR`]).
    pub fn client(&self, cn: &str) -> ClientFiles {
        self.issue(cn, cn, false)
    }

    pub fn server(&self) -> ClientFiles {
        self.issue("broker", "localhost", true)
    }
}

/// A running Mosquitto.
pub struct Broker {
    pub port: u16,
    conf: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl Broker {
    /// Start Mosquitto with TLS client certificates and the pattern ACL.
    pub fn start(pki: &Pki) -> Broker {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let server = pki.server();
        let dir = &pki.dir;
        let acl = dir.join("acl");
        std::fs::write(
            &acl,
            format!(
                "# the operator reaches every device\nuser {OPERATOR}\ntopic readwrite roombox/#\n\n\
                 # a device (its certificate's CN) reaches only its own topics\npattern readwrite roombox/%u/#\n"
            ),
        )
        .unwrap();
        let persist = dir.join("persist");
        std::fs::create_dir_all(&persist).unwrap();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "user root\npersistence true\npersistence_location {}/\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n\
                 listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n\
                 use_identity_as_username true\nallow_anonymous false\nacl_file {}\n",
                persist.display(),
                server.ca.display(),
                server.cert.display(),
                server.key.display(),
                acl.display()
            ),
        )
        .unwrap();
        let mut b = Broker { port, conf, child: None, log: dir.join("mosquitto.log") };
        b.restart_process();
        b
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn restart_process(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto (apt install mosquitto) must be installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not listen: {}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop (SIGTERM: it saves retained messages and sessions) and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe_kill(c.id(), 15);
            let _ = c.wait();
        }
    }

    pub fn start_again(&mut self) {
        assert!(self.child.is_none());
        self.restart_process();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn unsafe_kill(pid: u32, sig: i32) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

/// What a test client received.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Msg {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or(serde_json::Value::Null)
    }
}

/// An MQTT client over TLS with a client certificate, collecting every publish it receives.
pub struct TestClient {
    pub client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Msg>,
    pub seen: Vec<Msg>,
    task: tokio::task::JoinHandle<()>,
}

impl TestClient {
    pub async fn connect(broker: &str, files: &ClientFiles, id: &str) -> TestClient {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let tls = cloud_bridge::fleet::driver::tls_client_config(&files.ca, &files.cert, &files.key).unwrap();
        let opts =
            cloud_bridge::fleet::driver::mqtt_options(id, broker, Duration::from_secs(10), tls, None, true)
                .unwrap();
        let (client, mut el) = AsyncClient::new(opts, 64);
        let (tx, rx) = mpsc::unbounded_channel();
        let (up_tx, mut up_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = up_tx.send(());
                    }
                    Ok(rumqttc::Event::Incoming(Packet::Publish(p))) => {
                        let _ =
                            tx.send(Msg { topic: p.topic, payload: p.payload.to_vec(), retain: p.retain });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), up_rx.recv()).await.expect("test client connects");
        TestClient { client, rx, seen: Vec::new(), task }
    }

    pub async fn subscribe(&self, filter: &str) {
        self.client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        self.client.publish(topic, QoS::AtLeastOnce, retain, payload.into()).await.unwrap();
    }

    /// Wait (up to `secs`) for a message matching `f`; every message is kept in `seen`.
    pub async fn wait_for(&mut self, secs: u64, what: &str, f: impl Fn(&Msg) -> bool) -> Msg {
        if let Some(m) = self.seen.iter().find(|m| f(m)) {
            return m.clone();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) => {
                    self.seen.push(m.clone());
                    if f(&m) {
                        return m;
                    }
                }
                _ => panic!(
                    "no {what} within {secs} s; saw: {:?}",
                    self.seen.iter().map(|m| (m.topic.clone(), m.text())).collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Wait until `n` messages matching `f` have been seen.
    pub async fn wait_n(&mut self, secs: u64, what: &str, n: usize, f: impl Fn(&Msg) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while self.seen.iter().filter(|m| f(m)).count() < n {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) => self.seen.push(m),
                _ => panic!("fewer than {n} x {what} within {secs} s"),
            }
        }
    }

    /// Messages seen so far on `topic`.
    pub fn seen_on(&self, topic: &str) -> Vec<Msg> {
        self.seen.iter().filter(|m| m.topic == topic).cloned().collect()
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}
