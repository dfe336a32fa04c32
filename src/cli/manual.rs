//! `ragmap completions SHELL` and `ragmap man`: generated from the clap
//! definition, so they never disagree with `--help`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;
use ragmap::exit;

use super::Args;

pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<u8> {
    let mut cmd = Args::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut cmd, "ragmap", &mut out);
    out.flush().context("cannot write the completion script")?;
    Ok(exit::SUCCESS)
}

/// The top page on stdout, or every command's page written into `dir`.
pub fn man(dir: Option<&Path>) -> anyhow::Result<u8> {
    let cmd = Args::command();
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .context("cannot write the man page")?;
            out.flush().context("cannot write the man page")?;
        }
    }
    Ok(exit::SUCCESS)
}
