//! `sfu`: the SFU alone, from a TOML config (the code cloud nodes run).
fn main() -> anyhow::Result<()> {
    anyhow::bail!("not yet implemented")
}
