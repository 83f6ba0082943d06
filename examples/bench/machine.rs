//! Machine facts: what the figures belong to (CPU, kernel, redis-server, the temp dir's
//! filesystem).

use std::path::Path;
use std::process::Command;

use crate::stats::Scale;

/// Print the machine's facts; returns them in one line for the page.
pub(crate) fn print_machine(scale: Scale) -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let redis = Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_else(|e| format!("not runnable: {e}"));
    let tmp = std::env::temp_dir();

    println!("tractatus-lock benchmark report");
    println!("===============================");
    println!("nproc:        {nproc}");
    println!("cpu:          {cpu}");
    println!("kernel:       {kernel}");
    println!("redis-server: {redis}");
    println!(
        "temp dir:     {} on {} (state commits fsync there)",
        tmp.display(),
        filesystem_name(&tmp)
    );
    println!(
        "scale:        {} (BENCH_SCALE); ratios are against the named floor's p50",
        scale.0
    );
    format!(
        "{nproc} cores ({cpu}), Linux {kernel}, {}, temp dir on {}, BENCH_SCALE {}",
        redis.split(" sha=").next().unwrap_or(&redis),
        filesystem_name(&tmp),
        scale.0
    )
}

/// A readable name for the filesystem holding `path`: fsync costs differ by an order of
/// magnitude between tmpfs and a disk.
fn filesystem_name(path: &Path) -> String {
    let Ok(fs) = nix::sys::statfs::statfs(path) else {
        return "unknown filesystem".into();
    };
    let magic = fs.filesystem_type().0;
    let name = match magic {
        0x0102_1994 => "tmpfs",
        0xEF53 => "ext2/3/4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x794C_7630 => "overlayfs",
        _ => "",
    };
    if name.is_empty() {
        format!("filesystem magic {magic:#x}")
    } else {
        name.to_owned()
    }
}
