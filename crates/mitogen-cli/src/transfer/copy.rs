//! `mitogen copy TARGET... -- SRC... DEST`: push local files and trees to
//! every target, through `files::push_all_each` so that targets behind one
//! shared hop get the bytes over the first link once, each reported as it
//! finishes.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use mitogen::files::{push_all_each, Transfer};
use mitogen::{Router, Target};

use super::args::CopyArgs;
use super::{execute, Failure, Outcome, Verb};
use crate::printer::transfer::TransferPrinter;

/// Each source with the path of its copy on the targets.
pub type Plan = Vec<(PathBuf, PathBuf)>;

/// Where each SRC goes (`mitogen copy --help`): decided from the arguments
/// alone, never from what a target has, so that every target gets the same.
/// An error is a usage error.
pub fn plan(paths: &[PathBuf]) -> Result<Plan, String> {
    let (dest, sources) = match paths.split_last() {
        Some((dest, sources)) if !sources.is_empty() => (dest, sources),
        _ => return Err("give at least one SRC and a DEST after `--`".into()),
    };
    if dest.as_os_str().is_empty() || sources.iter().any(|s| s.as_os_str().is_empty()) {
        return Err("an empty path".into());
    }
    let into_dir = sources.len() > 1 || dest.as_os_str().as_bytes().ends_with(b"/");
    if !into_dir {
        return Ok(vec![(sources[0].clone(), dest.clone())]);
    }
    named_in(dest, sources)
}

/// `dir/NAME` for each of `paths`, NAME being its last part; refuses a path
/// without one (`/`, `.`, `..`) and two paths with the same.
pub fn named_in(dir: &Path, paths: &[PathBuf]) -> Result<Plan, String> {
    let mut plan: Plan = Vec::with_capacity(paths.len());
    for p in paths {
        let name = p.file_name().ok_or_else(|| {
            format!(
                "{} has no name of its own to give its copy in {}",
                p.display(),
                dir.display()
            )
        })?;
        if let Some((other, _)) = plan.iter().find(|(o, _)| o.file_name() == Some(name)) {
            return Err(format!(
                "{} and {} would both become {}",
                other.display(),
                p.display(),
                dir.join(name).display()
            ));
        }
        plan.push((p.clone(), dir.join(name)));
    }
    Ok(plan)
}

/// Targets behind the same first hop are pushed to together, all of them
/// whatever `-j` is, so that `push_all` stages the bytes on that hop once; a
/// one-hop target is a group of its own (and runs in parallel with the
/// others).
fn group_of(t: &Target) -> Option<String> {
    (t.hops().len() > 1).then(|| t.prefix(1))
}

/// A result the library lends (`push_all_each`), as a report's own.
fn outcome(r: &mitogen::Result<Transfer>) -> Outcome {
    match r {
        Ok(t) => Ok(t.clone()),
        Err(mitogen::Error::File(f)) => Err(mitogen::Error::File(f.clone()).into()),
        Err(e) => Err(Failure::other(e.to_string())),
    }
}

/// Runs `mitogen copy`; returns the exit status.
pub fn run(
    router: &Router,
    args: CopyArgs,
    plan: &Plan,
    printer: &mut dyn TransferPrinter,
) -> anyhow::Result<u8> {
    let options = args
        .common
        .connect
        .connect_options(&args.targets.iter().collect::<Vec<_>>())?;
    let mut opts = args.common.files.options();
    // A group is every target behind one first hop (schedule::jobs): -j
    // bounds the pushes from that hop, and from here.
    opts.fan_out = args.common.fleet.forks;
    let work = |members: super::Members, early: super::Early| {
        let contexts: Vec<_> = members.iter().map(|(_, c)| c.clone()).collect();
        let mut each: Vec<Vec<Outcome>> = members.iter().map(|_| Vec::new()).collect();
        for (n, (src, dst)) in plan.iter().enumerate() {
            // A target is done when its last path is: it is reported then,
            // not when the last target of its group is.
            let last = n + 1 == plan.len();
            let results = push_all_each(&contexts, src, dst, &opts, |k, r| {
                if let (true, Some(before)) = (last, each.get(k)) {
                    let mut all = before.clone();
                    all.push(outcome(r));
                    early(k, None, all);
                }
            });
            for (mine, r) in each.iter_mut().zip(results) {
                mine.push(r.map_err(Into::into));
            }
        }
        each.into_iter().map(|r| (None, r)).collect()
    };
    execute(
        router,
        Verb::Copy,
        &args.targets,
        &options,
        args.common.fleet.forks,
        group_of,
        work,
        printer,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(paths: &[&str]) -> Result<Vec<(String, String)>, String> {
        let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
        plan(&paths).map(|v| {
            v.into_iter()
                .map(|(a, b)| (a.display().to_string(), b.display().to_string()))
                .collect()
        })
    }

    fn pair(a: &str, b: &str) -> (String, String) {
        (a.into(), b.into())
    }

    #[test]
    fn dest_is_the_copy_unless_it_ends_in_a_slash_or_there_are_several() {
        assert_eq!(
            p(&["a/site", "/srv/www"]),
            Ok(vec![pair("a/site", "/srv/www")])
        );
        assert_eq!(
            p(&["a/site", "/srv/"]),
            Ok(vec![pair("a/site", "/srv/site")])
        );
        assert_eq!(
            p(&["a/site/", "/srv/"]),
            Ok(vec![pair("a/site/", "/srv/site")])
        );
        assert_eq!(
            p(&["x.conf", "b/y.conf", "/etc/app"]),
            Ok(vec![
                pair("x.conf", "/etc/app/x.conf"),
                pair("b/y.conf", "/etc/app/y.conf")
            ])
        );
    }

    #[test]
    fn refuses_what_has_no_name_or_the_same_name() {
        assert!(p(&["/tmp"]).is_err());
        assert!(p(&[".", "/srv/"]).unwrap_err().contains("no name"));
        assert!(p(&["..", "x", "/srv"]).is_err());
        let e = p(&["a/x", "b/x", "/srv"]).unwrap_err();
        assert!(e.contains("/srv/x"), "{e}");
    }
}
