//! The `tractatus` binary under test: where it is, and a command line with a clean environment.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A `tractatus` binary. Integration tests make it from `env!("CARGO_BIN_EXE_tractatus")`;
/// examples find the one cargo built beside them.
#[derive(Clone, Debug)]
pub struct Cli {
    bin: PathBuf,
}

impl Cli {
    /// The binary at `bin`.
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        Cli { bin: bin.into() }
    }

    /// The binary of the same build profile as the running example: an example runs as
    /// `target/<profile>/examples/NAME`, the binary is `target/<profile>/tractatus`. Building it
    /// from the example would fight with cargo's lock, so a missing binary is an error that
    /// names the path looked at.
    pub fn beside_examples() -> Result<Self, PathBuf> {
        let exe = std::env::current_exe().map_err(|_| PathBuf::from("tractatus"))?;
        let bin = exe
            .parent()
            .and_then(Path::parent)
            .map_or_else(|| PathBuf::from("tractatus"), |d| d.join("tractatus"));
        if bin.is_file() {
            Ok(Cli { bin })
        } else {
            Err(bin)
        }
    }

    /// Where the binary is.
    pub fn path(&self) -> &Path {
        &self.bin
    }

    /// `tractatus` run in `dir` with no `TRACTATUS_*` variable from our environment, so that
    /// only what the caller passes decides the backend, namespace and timings.
    pub fn command(&self, dir: &Path) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(dir);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TRACTATUS_") {
                cmd.env_remove(k);
            }
        }
        cmd
    }
}
