//! The whole suite (filled in below).
use std::path::{Path, PathBuf};

use crate::scenario::{Env, Kind, Spec, Workload};

pub async fn suite(
    _env: Env,
    _kinds: Vec<Kind>,
    _doc: Option<PathBuf>,
    _repeat: usize,
    _spec: impl Fn(Workload) -> Spec,
    _out: &Path,
) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
