//! `cargo xtask fuzz [TARGET] [--time S] [--ci] [--seed] [-- LIBFUZZER_ARGS]`:
//! the fuzz targets of `fuzz/` (libFuzzer through cargo-fuzz).
//!
//! One build for every target (release, debug assertions on, no sanitizer
//! so that the stable toolchain builds it: `-s none` needs no `-Z` flag),
//! then each target runs for `--time` seconds (30 by default) from its
//! committed seeds (`fuzz/corpus/<target>/seed-*`); what it finds grows
//! `fuzz/target/corpus/<target>`. A crash, panic, timeout or leak of
//! memory fails the task and leaves its input in `fuzz/artifacts/<target>/`.
//! Arguments after `--` go to libFuzzer (`-runs=10000000`).
//!
//! `--ci`: every target for 5 seconds (unless `--time`) from an
//! unoptimised build, which takes a fraction of the release build's time
//! and is fast enough for a few seconds; then `fuzz/target` is removed,
//! whatever the outcome, to give the disk back.
//! `--seed`: writes the seed corpora again with the crates' own encoders
//! (`fuzz/src/bin/seeds.rs`) and runs nothing.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

/// Every target, in `fuzz/Cargo.toml`'s order.
const TARGETS: &[&str] = &[
    "announcement",
    "record_open",
    "sync",
    "admission",
    "tunnel_hello",
    "inspect_wire",
    "tcp_frames",
    "invite",
    "route",
    "traceparent",
    "trace_sniff",
    "inspect_sniff",
    "project_toml",
    "daemon_toml",
];

/// Seconds each target runs unless `--time` says otherwise.
const DEFAULT_SECS: u64 = 30;
/// Seconds each target runs under `--ci`.
const CI_SECS: u64 = 5;
/// Seconds one input may take before libFuzzer calls it a timeout.
const INPUT_TIMEOUT_SECS: u64 = 10;

/// How the targets are built: optimised (fuzzing for real), or not (CI's
/// few seconds, for a quicker build).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    Release,
    Dev,
}

/// What libFuzzer reported at the end of one run.
struct Stats {
    runs: u64,
    secs: f64,
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let (ours, libfuzzer) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[][..]),
    };
    let ci = ours.iter().any(|a| a == "--ci");
    let mut time = None;
    let mut target = None;
    let mut rest = ours.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--ci" | "--seed" => {}
            "--time" => {
                let secs = rest.next().context("--time takes a number of seconds")?;
                time = Some(
                    secs.parse::<u64>()
                        .context("--time takes a number of seconds")?,
                );
            }
            name if !name.starts_with('-') && target.is_none() => {
                if !TARGETS.contains(&name) {
                    bail!("no fuzz target {name}; the targets: {}", TARGETS.join(", "));
                }
                target = Some(name);
            }
            other => bail!(
                "unexpected {other}; usage: cargo xtask fuzz [TARGET] [--time S] [--ci] [--seed] [-- LIBFUZZER_ARGS]"
            ),
        }
    }
    let fuzz = crate::root().join("fuzz");
    if ours.iter().any(|a| a == "--seed") {
        return seed(&fuzz);
    }
    let secs = time.unwrap_or(if ci { CI_SECS } else { DEFAULT_SECS });
    let targets: Vec<&str> = target.map_or_else(|| TARGETS.to_vec(), |t| vec![t]);
    let profile = if ci { Profile::Dev } else { Profile::Release };
    let result = build(target, profile).and_then(|()| {
        for t in &targets {
            fuzz_one(&fuzz, profile, t, secs, libfuzzer)?;
        }
        Ok(())
    });
    if ci {
        let target_dir = fuzz.join("target");
        let size = du(&target_dir);
        fs::remove_dir_all(&target_dir)
            .with_context(|| format!("removing {}", target_dir.display()))?;
        eprintln!("xtask fuzz: removed fuzz/target ({size})");
    }
    result
}

/// cargo-fuzz, or how to install it.
fn cargo_fuzz() -> anyhow::Result<Command> {
    let mut cmd = crate::cargo();
    let found = cmd
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        bail!("cargo-fuzz is needed: cargo install cargo-fuzz --locked");
    }
    Ok(crate::cargo())
}

/// Builds `target`, or every target (and the seeds writer) in one cargo
/// invocation.
fn build(target: Option<&str>, profile: Profile) -> anyhow::Result<()> {
    let mut cmd = cargo_fuzz()?;
    // `-s none`: no sanitizer, so no `-Z` flag and no nightly; Rust code
    // is memory-safe and the decoders under test have no unsafe code.
    // Coverage instrumentation (sancov) is `-C` flags, stable.
    cmd.args([
        "fuzz",
        "build",
        "--fuzz-dir",
        "fuzz",
        "--sanitizer",
        "none",
        "--debug-assertions",
    ]);
    if profile == Profile::Dev {
        cmd.arg("--dev");
    }
    cmd.args(target);
    // cargo-fuzz asks for line tables; none make the build a fraction of
    // the size (a crash still names its functions).
    cmd.env("RUSTFLAGS", "-Cdebuginfo=0");
    crate::run(&mut cmd).context("building the fuzz targets")
}

/// Runs one built target for `secs` seconds (or as `libfuzzer` says).
fn fuzz_one(
    fuzz: &Path,
    profile: Profile,
    target: &str,
    secs: u64,
    libfuzzer: &[String],
) -> anyhow::Result<()> {
    let bin = built_dir(fuzz, profile)?.join(target);
    let corpus = fuzz.join("target/corpus").join(target);
    let artifacts = fuzz.join("artifacts").join(target);
    let logs = fuzz.join("target/logs");
    for dir in [&corpus, &artifacts, &logs] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let log_path = logs.join(format!("{target}.log"));
    let mut log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut cmd = Command::new(&bin);
    cmd.arg(format!("-max_total_time={secs}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        .args(libfuzzer)
        // New inputs go to the first directory; the seeds are only read.
        .arg(&corpus)
        .arg(fuzz.join("corpus").join(target))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {}", bin.display()))?;
    let stderr = child.stderr.take().context("libFuzzer's stderr")?;
    let mut stats = Stats { runs: 0, secs: 0.0 };
    let mut tail = std::collections::VecDeque::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading libFuzzer's output")?;
        writeln!(log, "{line}")?;
        read_stats(&line, &mut stats);
        tail.push_back(line);
        if tail.len() > 60 {
            tail.pop_front();
        }
    }
    let status = child.wait()?;
    if !status.success() {
        for line in &tail {
            eprintln!("{line}");
        }
        bail!(
            "fuzz target {target} failed ({status}) after {} runs: the input is in {} (full output: {})",
            stats.runs,
            artifacts.display(),
            log_path.display()
        );
    }
    if stats.secs == 0.0 {
        stats.secs = started.elapsed().as_secs_f64();
    }
    println!(
        "{target}: {} runs in {:.0} s ({:.0}/s), no crash",
        stats.runs,
        stats.secs,
        stats.runs as f64 / stats.secs.max(0.001)
    );
    Ok(())
}

/// Takes the run count and time from libFuzzer's last lines:
/// `Done 1234 runs in 5 second(s)` and `stat::number_of_executed_units: 1234`.
fn read_stats(line: &str, stats: &mut Stats) {
    if let Some(rest) = line.strip_prefix("Done ") {
        let mut words = rest.split_whitespace();
        if let (Some(runs), Some("runs"), Some("in"), Some(secs)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            stats.runs = runs.parse().unwrap_or(stats.runs);
            stats.secs = secs.parse().unwrap_or(stats.secs);
        }
    } else if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
        stats.runs = n.trim().parse().unwrap_or(stats.runs);
    }
}

/// The triple cargo-fuzz builds for: the host's.
fn host_triple() -> anyhow::Result<String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV names no host")
}

/// Writes the seed corpora: `fuzz/src/bin/seeds.rs`, built with the
/// targets (an instrumented binary with a `main` of its own runs as any
/// other), run.
fn seed(fuzz: &Path) -> anyhow::Result<()> {
    build(None, Profile::Release)?;
    let bin = built_dir(fuzz, Profile::Release)?.join("seeds");
    crate::run(Command::new(bin).arg(fuzz.join("corpus")))
}

/// Where cargo-fuzz puts the targets built with `profile`.
fn built_dir(fuzz: &Path, profile: Profile) -> anyhow::Result<PathBuf> {
    let dir = match profile {
        Profile::Release => "release",
        Profile::Dev => "debug",
    };
    Ok(fuzz.join("target").join(host_triple()?).join(dir))
}

/// The heading of the fuzzing section of docs/BENCHMARKS.md.
const SECTION_HEADING: &str = "## Fuzzing (`cargo xtask fuzz`)";

/// The fuzzing section of docs/BENCHMARKS.md (a long run measured by
/// hand), for `cargo xtask bench` to keep when it rewrites the file: from
/// its heading to the next heading, comment or the end.
pub fn kept_section() -> Option<String> {
    let doc = fs::read_to_string(crate::root().join("docs/BENCHMARKS.md")).ok()?;
    let start = doc.find(SECTION_HEADING)?;
    let rest = &doc[start + SECTION_HEADING.len()..];
    let end = [rest.find("\n## "), rest.find("\n<!--")]
        .into_iter()
        .flatten()
        .min()
        .map_or(doc.len(), |i| start + SECTION_HEADING.len() + i);
    Some(doc[start..end].trim_end().to_owned())
}

/// `du -sh` of `dir`, or `?`.
fn du(dir: &Path) -> String {
    Command::new("du")
        .arg("-sh")
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_come_from_libfuzzers_last_lines() {
        let mut s = Stats { runs: 0, secs: 0.0 };
        read_stats("#1048576\tpulse  cov: 12 ft: 14 corp: 3/9b", &mut s);
        assert_eq!(s.runs, 0);
        read_stats("Done 9154218 runs in 31 second(s)", &mut s);
        assert_eq!((s.runs, s.secs), (9_154_218, 31.0));
        read_stats("stat::number_of_executed_units: 9154219", &mut s);
        assert_eq!(s.runs, 9_154_219);
    }

    #[test]
    fn every_target_has_a_source_and_seeds() {
        let fuzz = crate::root().join("fuzz");
        let manifest = fs::read_to_string(fuzz.join("Cargo.toml")).unwrap();
        for t in TARGETS {
            assert!(fuzz.join(format!("fuzz_targets/{t}.rs")).is_file(), "{t}");
            assert!(manifest.contains(&format!("name = \"{t}\"")), "{t}");
            let seeds = fs::read_dir(fuzz.join("corpus").join(t)).unwrap().count();
            assert!(seeds > 0, "{t} has no seeds");
        }
        let bins = manifest.matches("[[bin]]").count();
        assert_eq!(
            bins,
            TARGETS.len(),
            "a target of fuzz/Cargo.toml is not in TARGETS"
        );
    }
}
