//! HTTPS: the owner's certificate, or a self-signed one made on first boot.
//!
//! Browsers only give a page the camera and microphone on a secure origin, so
//! the box serves HTTPS from the first boot. Without `http.cert_file`, a
//! self-signed certificate (ECDSA P-256, `rcgen`) is made in
//! `<data_dir>/tls/` with SANs for the hostname, `localhost`, every address of
//! the box and `http.extra_names`. It is made again only when a name or address
//! appears that it does not cover (a new DHCP lease), never on every boot.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::auth::write_private_new;

/// Where the certificate and key the server uses are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// True when the box made it (browsers will warn once).
    pub self_signed: bool,
    /// SHA-256 fingerprint of the leaf certificate (hex, colon-separated), to compare on first visit.
    pub fingerprint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("certificate generation failed: {0}")]
    Generate(String),
    #[error("{0} holds no PEM certificate")]
    NoCert(PathBuf),
}

/// The machine's hostname.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "roombox".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Every address of the machine's interfaces (loopback included).
pub fn local_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a linked list we walk read-only and free once.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return out;
        }
        let mut cur = ifap;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() {
                match (*addr).sa_family as i32 {
                    libc::AF_INET => {
                        let sin = &*(addr as *const libc::sockaddr_in);
                        out.push(IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes()));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(addr as *const libc::sockaddr_in6);
                        let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                        // Link-local addresses need a zone; they are useless in a certificate.
                        if ip.segments()[0] & 0xffc0 != 0xfe80 {
                            out.push(IpAddr::V6(ip));
                        }
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    out.sort();
    out.dedup();
    out
}

/// The names a self-signed certificate should cover.
pub fn wanted_names(extra: &[String]) -> Vec<String> {
    let mut names = vec![hostname(), "localhost".to_owned()];
    names.extend(extra.iter().cloned());
    names.extend(local_addresses().iter().map(|ip| ip.to_string()));
    names.extend(["127.0.0.1".to_owned(), "::1".to_owned()]);
    names.retain(|n| !n.is_empty());
    names.sort();
    names.dedup();
    names
}

/// The owner's certificate, checked to be readable.
pub fn owner_files(cert: &Path, key: &Path) -> Result<TlsFiles, TlsError> {
    let pem = std::fs::read(cert).map_err(|source| TlsError::Io { path: cert.to_owned(), source })?;
    std::fs::metadata(key).map_err(|source| TlsError::Io { path: key.to_owned(), source })?;
    Ok(TlsFiles {
        cert: cert.to_owned(),
        key: key.to_owned(),
        self_signed: false,
        fingerprint: fingerprint_pem(&pem).ok_or_else(|| TlsError::NoCert(cert.to_owned()))?,
    })
}

/// The self-signed certificate in `<data_dir>/tls/`, made when missing or when
/// it does not cover `names`.
pub fn ensure_self_signed(data_dir: &Path, names: &[String]) -> Result<TlsFiles, TlsError> {
    let dir = data_dir.join("tls");
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Io { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let (cert, key, list) = (dir.join("cert.pem"), dir.join("key.pem"), dir.join("names.txt"));
    let covered: Vec<String> =
        std::fs::read_to_string(&list).map(|s| s.lines().map(str::to_owned).collect()).unwrap_or_default();
    if cert.exists() && key.exists() && names.iter().all(|n| covered.contains(n)) {
        let pem = std::fs::read(&cert).map_err(io(&cert))?;
        if let Some(fp) = fingerprint_pem(&pem) {
            return Ok(TlsFiles { cert, key, self_signed: true, fingerprint: fp });
        }
    }
    let mut all: Vec<String> = covered;
    all.extend(names.iter().cloned());
    all.sort();
    all.dedup();
    let mut params =
        rcgen::CertificateParams::new(all.clone()).map_err(|e| TlsError::Generate(e.to_string()))?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, format!("roombox {}", hostname()));
    dn.push(rcgen::DnType::OrganizationName, "roombox appliance (self-signed)");
    params.distinguished_name = dn;
    let signing_key = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let c = params.self_signed(&signing_key).map_err(|e| TlsError::Generate(e.to_string()))?;
    // Write new files beside the old ones, then rename: never a half-written pair.
    let (cert_tmp, key_tmp) = (dir.join("cert.pem.new"), dir.join("key.pem.new"));
    let _ = std::fs::remove_file(&cert_tmp);
    let _ = std::fs::remove_file(&key_tmp);
    write_private_new(&key_tmp, signing_key.serialize_pem().as_bytes()).map_err(io(&key_tmp))?;
    std::fs::write(&cert_tmp, c.pem()).map_err(io(&cert_tmp))?;
    std::fs::rename(&key_tmp, &key).map_err(io(&key))?;
    std::fs::rename(&cert_tmp, &cert).map_err(io(&cert))?;
    std::fs::write(&list, all.join("\n") + "\n").map_err(io(&list))?;
    tracing::info!(names = ?all, path = %cert.display(), "made a self-signed TLS certificate");
    let fp = fingerprint_der(c.der());
    Ok(TlsFiles { cert, key, self_signed: true, fingerprint: fp })
}

fn fingerprint_der(der: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    d.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

fn fingerprint_pem(pem: &[u8]) -> Option<String> {
    use base64::Engine as _;
    let text = std::str::from_utf8(pem).ok()?;
    let start = text.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = text[start..].find("-----END CERTIFICATE-----")? + start;
    let b64: String = text[start..end].chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some(fingerprint_der(&der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_made_once_and_reused() {
        let d = tempfile::tempdir().unwrap();
        let names = wanted_names(&["roombox.local".into()]);
        assert!(names.contains(&"127.0.0.1".to_owned()) && names.contains(&"localhost".to_owned()));
        let a = ensure_self_signed(d.path(), &names).unwrap();
        let b = ensure_self_signed(d.path(), &names).unwrap();
        assert_eq!(a, b, "reused, not made again");
        assert_eq!(a.fingerprint.len(), 32 * 3 - 1);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&a.key).unwrap().permissions().mode() & 0o777, 0o600);
        let mut more = names.clone();
        more.push("10.9.8.7".into());
        let c = ensure_self_signed(d.path(), &more).unwrap();
        assert_ne!(c.fingerprint, a.fingerprint, "a new address makes a new certificate");
    }
}
