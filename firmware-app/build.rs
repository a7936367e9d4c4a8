//! Embeds every file under `web/` (the web client) into the binary: writes
//! `$OUT_DIR/assets.rs`, a table of `(url path, bytes, etag)` built with
//! `include_bytes!`. Adding a file to `web/` needs no code change.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        let hidden = p.file_name().and_then(|n| n.to_str()).is_none_or(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            walk(&p, out);
        } else if p.is_file() {
            out.push(p);
        }
    }
}

/// FNV-1a, 64 bit: a content hash for ETags (no dependency needed).
fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("web");
    println!("cargo:rerun-if-changed=web");
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut code = String::from("pub static ASSETS: &[Asset] = &[\n");
    for f in &files {
        let rel = f.strip_prefix(&root).expect("under web/").to_string_lossy().replace('\\', "/");
        // Only plain names reach the table, so a URL can only ever match one of them.
        if !rel.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b)) {
            println!(
                "cargo:warning=web/{rel}: skipped (use letters, digits, '-', '_', '.' in web file names)"
            );
            continue;
        }
        let bytes = std::fs::read(f).expect("read web file");
        writeln!(
            code,
            "    Asset {{ path: \"/{rel}\", bytes: include_bytes!({:?}), etag: \"\\\"{:016x}\\\"\" }},",
            f.display().to_string(),
            fnv(&bytes)
        )
        .expect("write to string");
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("assets.rs");
    std::fs::write(out, code).expect("write assets.rs");
}
