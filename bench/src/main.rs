//! `roombox-bench`: load generator and benchmark suite.
fn main() -> anyhow::Result<()> {
    anyhow::bail!("not yet implemented")
}
