//! `mitogen fetch TARGET... -- REMOTE_PATH... LOCAL_DIR`: fetch from every
//! target into `LOCAL_DIR/TARGET/NAME`, a directory of its own per target.
//!
//! The library's fetch keeps what a (possibly hostile) target sends below
//! the destination it is given; this module makes sure that destination is
//! this target's own: the directory name is made from the target as the
//! operator wrote it (never from anything the target says), and neither it
//! nor the path of a copy may be a symbolic link, such as one an earlier
//! fetch from the same target left there, since the library follows links
//! in the destination's own path (as `cp` does).

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use mitogen::files::{FileError, FileErrorKind};
use mitogen::{Context, Router};

use super::args::FetchArgs;
use super::copy::{named_in, Plan};
use super::{execute, Failure, Outcome, Verb};
use crate::printer::transfer::TransferPrinter;

/// The directory name of a target's copies: its label with `%` and `/`
/// written `%25` and `%2F`, control bytes as `%XX`, and a leading `.` as
/// `%2E`, so that two targets never share a directory and none is `.`, `..`
/// or hidden.
pub fn dir_name(label: &str) -> String {
    let mut out = String::with_capacity(label.len());
    for (i, c) in label.chars().enumerate() {
        match c {
            '%' | '/' => out.push_str(&format!("%{:02X}", c as u32)),
            '.' if i == 0 => out.push_str("%2E"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The planned destinations, checked: the parts of the arguments that are
/// usage errors.
pub fn plan(paths: &[PathBuf], flat: bool, targets: usize) -> Result<(PathBuf, Plan), String> {
    if flat && targets > 1 {
        return Err(
            "--flat takes one target: with several, each needs a directory of its own".into(),
        );
    }
    let (dir, remote) = match paths.split_last() {
        Some((dir, remote)) if !remote.is_empty() => (dir, remote),
        _ => return Err("give at least one REMOTE_PATH and a LOCAL_DIR after `--`".into()),
    };
    if dir.as_os_str().is_empty() || remote.iter().any(|s| s.as_os_str().is_empty()) {
        return Err("an empty path".into());
    }
    // Relative to the target's directory here; made absolute per target.
    Ok((dir.clone(), named_in(Path::new(""), remote)?))
}

/// A local-side failure about `path`, named as the library names its own.
fn local_error(router: &Router, kind: FileErrorKind, path: &Path, detail: &str) -> Failure {
    mitogen::Error::File(FileError::new(
        kind,
        router.name(),
        path.display().to_string(),
        detail,
    ))
    .into()
}

fn io_error(router: &Router, path: &Path, e: &std::io::Error) -> Failure {
    local_error(router, FileError::kind_of(e), path, &e.to_string())
}

/// Makes `dir` (a target's own directory, or LOCAL_DIR with `--flat`) with
/// LOCAL_DIR above it; `dir` may exist, as a directory and not as a link.
fn own_dir(router: &Router, local_dir: &Path, dir: &Path) -> Result<(), Failure> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(local_dir)
        .map_err(|e| io_error(router, local_dir, &e))?;
    match std::fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            not_a_link(router, dir)?;
            match std::fs::symlink_metadata(dir) {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(_) => Err(local_error(
                    router,
                    FileErrorKind::Conflict,
                    dir,
                    "exists and is not a directory",
                )),
                Err(e) => Err(io_error(router, dir, &e)),
            }
        }
        Err(e) => Err(io_error(router, dir, &e)),
    }
}

/// Refuses `path` when it is a symbolic link: a copy is never written
/// through one (a target could have sent it in an earlier fetch).
fn not_a_link(router: &Router, path: &Path) -> Result<(), Failure> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(local_error(
            router,
            FileErrorKind::Unsafe,
            path,
            "is a symbolic link (an earlier fetch may have made it); not followed: remove it to fetch here",
        )),
        _ => Ok(()),
    }
}

/// Fetches every path of `plan` from `ctx` into `dir`.
fn fetch_one(
    router: &Router,
    ctx: &Context,
    local_dir: &Path,
    dir: &Path,
    plan: &Plan,
    opts: &mitogen::files::FileOptions,
) -> Vec<Outcome> {
    if let Err(f) = own_dir(router, local_dir, dir) {
        return vec![Err(f)];
    }
    plan.iter()
        .map(|(remote, name)| {
            let dst = dir.join(name);
            not_a_link(router, &dst)?;
            ctx.fetch_with(remote, &dst, opts).map_err(Failure::from)
        })
        .collect()
}

/// Runs `mitogen fetch`; returns the exit status.
pub fn run(
    router: &Router,
    args: FetchArgs,
    local_dir: &Path,
    plan: &Plan,
    printer: &mut dyn TransferPrinter,
) -> anyhow::Result<u8> {
    let options = args
        .common
        .session
        .connect
        .connect_options(&args.targets.iter().collect::<Vec<_>>())?;
    let mut opts = args.common.files.options();
    let counter = mitogen::files::Progress::new();
    opts.progress = Some(counter.clone());
    // What a target has is known only once it has listed it: bytes and
    // rate, no total.
    let bytes = super::progress::Bytes {
        counter,
        total: None,
        shown: !args.common.json,
    };
    let labels = crate::run::labels(&args.targets);
    let work = |members: super::Members, _: super::Early| {
        members
            .iter()
            .map(|(i, ctx)| {
                let dir = if args.flat {
                    local_dir.to_path_buf()
                } else {
                    local_dir.join(dir_name(&labels[*i]))
                };
                let results = fetch_one(router, ctx, local_dir, &dir, plan, &opts);
                (Some(dir.display().to_string()), results)
            })
            .collect()
    };
    // Every target is a group of its own: fetches run in parallel.
    execute(
        router,
        Verb::Fetch,
        &args.targets,
        &options,
        args.common.session.fleet.forks,
        |_| None,
        work,
        printer,
        bytes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_directories_are_safe_and_distinct() {
        assert_eq!(dir_name("root@web1:2222"), "root@web1:2222");
        assert_eq!(dir_name("bastion/web1"), "bastion%2Fweb1");
        assert_eq!(dir_name("bastion%2Fweb1"), "bastion%252Fweb1");
        assert_eq!(dir_name(".."), "%2E.");
        assert_eq!(dir_name("a\nb"), "a%0Ab");
        assert_eq!(dir_name("local#2"), "local#2");
    }

    #[test]
    fn plan_checks_flat_and_names() {
        let paths = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
        let (dir, plan) = plan(&paths(&["/var/log/syslog", "/etc/", "out"]), false, 2).unwrap();
        assert_eq!(dir, Path::new("out"));
        assert_eq!(plan[0].1, Path::new("syslog"));
        assert_eq!(plan[1].1, Path::new("etc"));
        assert!(super::plan(&paths(&["/a", "out"]), true, 2).is_err());
        assert!(super::plan(&paths(&["/a", "out"]), true, 1).is_ok());
        assert!(super::plan(&paths(&["/a/x", "/b/x", "out"]), false, 1).is_err());
        assert!(super::plan(&paths(&["/", "out"]), false, 1).is_err());
    }
}
