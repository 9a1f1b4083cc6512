//! `mitogen bench --files` and `--files-only` against local targets, with a
//! small file and tree so that they run in seconds: every file key is there
//! and positive, the unchanged second push skips every file, and nothing is
//! left in the temporary directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `mitogen` with `TMPDIR` set to a directory of the test's own (the
/// benchmark makes its scratch directories there, here and in the local
/// contexts, which inherit it).
fn mitogen(tmp: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mitogen"))
        .args(args)
        .env("TMPDIR", tmp)
        .env_remove("MITOGEN_LOG")
        .env_remove("RUST_LOG")
        .output()
        .expect("starting mitogen")
}

fn fresh_tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mitogen-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[track_caller]
fn json(out: &Output) -> serde_json::Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every file key is there and positive; the second push skipped all `n`
/// files; one peak per process (this one and each hop).
#[track_caller]
fn check_file_keys(r: &serde_json::Value, n: u64, processes: usize) {
    for key in [
        "push_mib_s",
        "fetch_mib_s",
        "small_files_per_s",
        "repush_ms",
        "repush_warm_ms",
    ] {
        let v = r[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing in {r}"));
        assert!(v > 0.0, "{key} = {v}");
    }
    assert_eq!(r["repush_skipped"].as_u64(), Some(n), "{r}");
    let peaks = r["peak_rss_kib"].as_array().expect("peak_rss_kib");
    assert_eq!(peaks.len(), processes, "{r}");
    assert!(peaks.iter().all(|p| p.as_u64().unwrap() > 0), "{r}");
}

#[test]
fn bench_files_only_reports_the_file_keys() {
    let tmp = fresh_tmp("bench-files");
    let out = mitogen(
        &tmp,
        &[
            "bench",
            "--files-only",
            "--json",
            "--target",
            "local",
            "--file-mib",
            "4",
            "--tree-files",
            "120",
            "--file-runs",
            "2",
            "--cpu",
        ],
    );
    let r = json(&out);
    check_file_keys(&r, 120, 2);
    // This process and the context both spent CPU moving the file each way.
    for key in ["push_cpu_ms_per_gib", "fetch_cpu_ms_per_gib"] {
        let cpu = r[key].as_array().unwrap_or_else(|| panic!("{key}: {r}"));
        assert_eq!(cpu.len(), 2, "{r}");
        assert!(cpu.iter().all(|ms| ms.as_f64().unwrap() > 0.0), "{r}");
    }
    // The file keys and nothing else.
    assert_eq!(r.as_object().unwrap().len(), 9, "{r}");
    assert!(r.get("connect_ms").is_none(), "{r}");
    // Both scratch directories (this process's, the context's) are gone.
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn bench_files_adds_the_file_keys_to_every_other_and_reaches_through_hops() {
    let tmp = fresh_tmp("bench-files-chain");
    let out = mitogen(
        &tmp,
        &[
            "bench",
            "--files",
            "--quick",
            "--json",
            "--mib",
            "4",
            "--target",
            "local/local",
            "--file-mib",
            "2",
            "--tree-files",
            "30",
        ],
    );
    let r = json(&out);
    check_file_keys(&r, 30, 3);
    assert!(r["connect_ms"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["throughput_mib_s"].as_f64().unwrap() > 0.0, "{r}");
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn bench_files_table_names_every_file_key() {
    let tmp = fresh_tmp("bench-files-table");
    let out = mitogen(
        &tmp,
        &[
            "bench",
            "--files-only",
            "--file-mib",
            "1",
            "--tree-files",
            "10",
            "--quick",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for key in [
        "push_mib_s",
        "fetch_mib_s",
        "small_files_per_s",
        "repush_ms",
        "repush_skipped",
        "repush_warm_ms",
        "peak_rss_kib",
    ] {
        assert!(stdout.contains(key), "{stdout}");
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn files_only_and_files_are_one_or_the_other() {
    let tmp = fresh_tmp("bench-files-usage");
    let out = mitogen(&tmp, &["bench", "--files-only", "--files"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    std::fs::remove_dir_all(&tmp).unwrap();
}
