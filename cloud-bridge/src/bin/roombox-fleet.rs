//! `roombox-fleet`: the operator's side of the fleet link.
//!
//! ```text
//! roombox-fleet keygen --out DIR [--algorithm EdDSA|ES256]
//! roombox-fleet --broker HOST:PORT --ca CA --cert CERT --key KEY list [--wait SECS]
//! roombox-fleet ... send --device ID --authority-key KEY --name NAME [--args JSON] [--ttl SECS] [--wait SECS]
//! roombox-fleet ... push-config --devices ID,ID --file roombox.toml --version V [--wait SECS]
//! roombox-fleet sign --device ID --authority-key KEY --name NAME [--args JSON] [--ttl SECS]
//! ```
//! Output is JSON, one object per line. Exit status: 0 = done and ok,
//! 1 = a device said no (refused, failed, rejected), 2 = no answer in time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use cloud_bridge::AuthorityAlgorithm;
use cloud_bridge::fleet::command::{CommandClaims, Signer, generate_authority_key};
use cloud_bridge::fleet::driver::{mqtt_options, tls_client_config, unix_now};
use cloud_bridge::fleet::{CommandResult, ConfigReport, ConfigStatus, DesiredConfig, RefusalReport};
use rumqttc::{AsyncClient, EventLoop, Packet, QoS};

#[derive(Parser)]
#[command(name = "roombox-fleet", version, about = "Operate a fleet of roombox appliances over MQTT")]
struct Cli {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args)]
struct Conn {
    /// The broker, HOST:PORT (TLS).
    #[arg(long, env = "ROOMBOX_FLEET_BROKER", global = true)]
    broker: Option<String>,
    /// The broker's CA certificate (PEM).
    #[arg(long, env = "ROOMBOX_FLEET_CA", global = true)]
    ca: Option<PathBuf>,
    /// The operator's client certificate (PEM).
    #[arg(long, env = "ROOMBOX_FLEET_CERT", global = true)]
    cert: Option<PathBuf>,
    /// The operator's client key (PEM).
    #[arg(long, env = "ROOMBOX_FLEET_KEY", global = true)]
    key: Option<PathBuf>,
}

#[derive(Args)]
struct Signing {
    /// The target device id.
    #[arg(long)]
    device: String,
    /// The fleet authority's private key (PKCS#8 PEM, from `keygen`).
    #[arg(long)]
    authority_key: PathBuf,
    #[arg(long, default_value = "EdDSA", value_parser = parse_alg)]
    algorithm: AuthorityAlgorithm,
    /// Command name (start_recording, stop_recording, mute, join_meeting, leave_meeting, reboot,
    /// rotate_certificate, install_update).
    #[arg(long)]
    name: String,
    /// Arguments, JSON (e.g. '{"mic":true}').
    #[arg(long, default_value = "null")]
    args: String,
    /// Seconds the command stays valid.
    #[arg(long, default_value_t = 300)]
    ttl: u64,
    /// Command id (default: a new UUID).
    #[arg(long)]
    id: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Make a fleet-authority key pair: DIR/authority.key.pem (keep it safe) and DIR/authority.pub.pem (for every box).
    Keygen {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "EdDSA", value_parser = parse_alg)]
        algorithm: AuthorityAlgorithm,
    },
    /// List devices from their retained status and state.
    List {
        #[arg(long, default_value_t = 2)]
        wait: u64,
    },
    /// Sign a command and print the token (no broker needed).
    Sign(Signing),
    /// Sign a command, send it, wait for its result, acknowledge it.
    Send {
        #[command(flatten)]
        s: Signing,
        #[arg(long, default_value_t = 30)]
        wait: u64,
        /// Leave the result retained (do not acknowledge it).
        #[arg(long)]
        no_ack: bool,
    },
    /// Publish a desired config (retained) to each device and wait for their reports.
    PushConfig {
        /// Comma-separated device ids.
        #[arg(long, value_delimiter = ',')]
        devices: Vec<String>,
        /// The complete roombox.toml to push.
        #[arg(long)]
        file: PathBuf,
        /// The config's version name.
        #[arg(long)]
        version: String,
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
}

fn parse_alg(s: &str) -> Result<AuthorityAlgorithm, String> {
    match s {
        "EdDSA" | "eddsa" | "ed25519" => Ok(AuthorityAlgorithm::EdDSA),
        "ES256" | "es256" => Ok(AuthorityAlgorithm::ES256),
        _ => Err("EdDSA or ES256".into()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match run(Cli::parse()).await {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("roombox-fleet: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn sign(s: &Signing) -> Result<(String, String)> {
    let pem =
        std::fs::read(&s.authority_key).with_context(|| format!("read {}", s.authority_key.display()))?;
    let signer = Signer::new(&pem, s.algorithm)?;
    let args: serde_json::Value = serde_json::from_str(&s.args).context("--args is not JSON")?;
    let id = s.id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let now = unix_now();
    let claims = CommandClaims {
        aud: s.device.clone(),
        sub: Some(s.device.clone()),
        jti: id.clone(),
        name: s.name.clone(),
        args,
        exp: now + s.ttl,
        iat: Some(now),
        iss: Some("roombox-fleet".into()),
    };
    Ok((id, signer.sign(&claims)?))
}

async fn connect(c: &Conn) -> Result<(AsyncClient, EventLoop)> {
    let (Some(broker), Some(ca), Some(cert), Some(key)) = (&c.broker, &c.ca, &c.cert, &c.key) else {
        bail!("--broker, --ca, --cert and --key are needed to talk to the broker");
    };
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let tls = tls_client_config(ca, cert, key)?;
    let id = format!("roombox-fleet-{}", uuid::Uuid::new_v4().simple());
    let opts = mqtt_options(&id, broker, Duration::from_secs(30), tls, None, true)?;
    Ok(AsyncClient::new(opts, 64))
}

/// Next incoming publish (topic, payload), or None at the deadline.
async fn next_publish(
    el: &mut EventLoop,
    deadline: tokio::time::Instant,
) -> Result<Option<(String, Vec<u8>)>> {
    loop {
        match tokio::time::timeout_at(deadline, el.poll()).await {
            Err(_) => return Ok(None),
            Ok(Err(e)) => bail!("broker: {e}"),
            Ok(Ok(rumqttc::Event::Incoming(Packet::Publish(p)))) => {
                return Ok(Some((p.topic, p.payload.to_vec())));
            }
            Ok(Ok(_)) => {}
        }
    }
}

fn print(v: serde_json::Value) {
    println!("{v}");
}

async fn run(cli: Cli) -> Result<u8> {
    match cli.cmd {
        Cmd::Keygen { out, algorithm } => {
            let (private, public) = generate_authority_key(algorithm)?;
            std::fs::create_dir_all(&out)?;
            let kp = out.join("authority.key.pem");
            {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&kp)
                    .with_context(|| format!("create {} (it must not exist yet)", kp.display()))?;
                f.write_all(private.as_bytes())?;
            }
            std::fs::write(out.join("authority.pub.pem"), public)?;
            print(
                serde_json::json!({"private_key": kp, "public_key": out.join("authority.pub.pem"), "algorithm": format!("{algorithm:?}")}),
            );
            Ok(0)
        }
        Cmd::Sign(s) => {
            let (_, token) = sign(&s)?;
            println!("{token}");
            Ok(0)
        }
        Cmd::List { wait } => {
            let (client, mut el) = connect(&cli.conn).await?;
            client.subscribe("roombox/+/status", QoS::AtLeastOnce).await?;
            client.subscribe("roombox/+/state", QoS::AtLeastOnce).await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
            let mut devices: BTreeMap<String, (Option<String>, serde_json::Value)> = BTreeMap::new();
            while let Some((topic, payload)) = next_publish(&mut el, deadline).await? {
                let mut parts = topic.split('/');
                let (Some(_), Some(dev), Some(kind)) = (parts.next(), parts.next(), parts.next()) else {
                    continue;
                };
                let e = devices.entry(dev.to_owned()).or_insert((None, serde_json::Value::Null));
                match kind {
                    "status" => e.0 = Some(String::from_utf8_lossy(&payload).into_owned()),
                    "state" => e.1 = serde_json::from_slice(&payload).unwrap_or(serde_json::Value::Null),
                    _ => {}
                }
            }
            for (dev, (status, state)) in devices {
                print(serde_json::json!({"device": dev, "status": status, "state": state}));
            }
            let _ = client.disconnect().await;
            Ok(0)
        }
        Cmd::Send { s, wait, no_ack } => {
            let (id, token) = sign(&s)?;
            let (client, mut el) = connect(&cli.conn).await?;
            let base = format!("roombox/{}", s.device);
            let result_topic = format!("{base}/cmd/{}/result", s.name);
            client.subscribe(&result_topic, QoS::AtLeastOnce).await?;
            client.subscribe(format!("{base}/refused"), QoS::AtLeastOnce).await?;
            client.publish(format!("{base}/cmd/{}", s.name), QoS::AtLeastOnce, false, token).await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
            while let Some((topic, payload)) = next_publish(&mut el, deadline).await? {
                if topic == result_topic {
                    let Ok(r) = serde_json::from_slice::<CommandResult>(&payload) else { continue };
                    if r.id != id {
                        continue;
                    }
                    print(serde_json::to_value(&r)?);
                    if !no_ack {
                        client
                            .publish(
                                format!("{base}/cmd/{}/ack", s.name),
                                QoS::AtLeastOnce,
                                false,
                                id.clone(),
                            )
                            .await?;
                        // Let the ack leave before disconnecting.
                        let until = tokio::time::Instant::now() + Duration::from_millis(500);
                        let _ = next_publish(&mut el, until).await;
                    }
                    let _ = client.disconnect().await;
                    return Ok(if r.ok { 0 } else { 1 });
                } else if let Ok(r) = serde_json::from_slice::<RefusalReport>(&payload)
                    && r.id.as_deref() == Some(id.as_str())
                {
                    print(serde_json::json!({"id": id, "refused": r.reason}));
                    return Ok(1);
                }
            }
            print(
                serde_json::json!({"id": id, "error": "no result in time (the box may be offline; the command stays queued for it while it is valid)"}),
            );
            Ok(2)
        }
        Cmd::PushConfig { devices, file, version, wait } => {
            let config =
                std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
            let payload = serde_json::to_vec(&DesiredConfig { version: version.clone(), config })?;
            let (client, mut el) = connect(&cli.conn).await?;
            client.subscribe("roombox/+/config/reported", QoS::AtLeastOnce).await?;
            for d in &devices {
                client
                    .publish(format!("roombox/{d}/config/desired"), QoS::AtLeastOnce, true, payload.clone())
                    .await?;
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
            let mut pending: std::collections::BTreeSet<String> = devices.iter().cloned().collect();
            let mut failed = false;
            while !pending.is_empty() {
                let Some((topic, payload)) = next_publish(&mut el, deadline).await? else { break };
                let dev = topic.split('/').nth(1).unwrap_or_default().to_owned();
                let Ok(r) = serde_json::from_slice::<ConfigReport>(&payload) else { continue };
                if r.version.as_deref() != Some(version.as_str()) || !pending.contains(&dev) {
                    continue;
                }
                if r.status == ConfigStatus::Applying {
                    // Restarting into it: the outcome follows from the restarted daemon.
                    print(serde_json::json!({"device": dev, "report": r}));
                    continue;
                }
                pending.remove(&dev);
                failed |= r.status != ConfigStatus::Applied;
                print(serde_json::json!({"device": dev, "report": r}));
            }
            for d in &pending {
                print(serde_json::json!({"device": d, "error": "no report in time"}));
            }
            let _ = client.disconnect().await;
            Ok(if !pending.is_empty() {
                2
            } else if failed {
                1
            } else {
                0
            })
        }
    }
}
