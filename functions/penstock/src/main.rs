//! The `penstock` command: validate, run and serve pipelines on the embedded default.

fn main() -> anyhow::Result<()> {
    Ok(())
}
