//! `roomboxd`, the appliance daemon.
fn main() -> anyhow::Result<()> {
    anyhow::bail!("not yet implemented")
}
