//! `mitogen copy TARGET... -- SRC... DEST`: push local files and trees to
//! every target, through `files::push_all_each` so that targets behind one
//! shared hop get the bytes over the first link once, each reported as it
//! finishes.

use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use mitogen::files::{push_all_each, Transfer};
use mitogen::{Router, Target};

use super::args::CopyArgs;
use super::progress::Bytes;
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
        .session
        .connect
        .connect_options(&args.targets.iter().collect::<Vec<_>>())?;
    let mut opts = args.common.files.options();
    // A group is every target behind one first hop (schedule::jobs): -j
    // bounds the pushes from that hop, and from here.
    opts.fan_out = args.common.session.fleet.forks;
    let counter = mitogen::files::Progress::new();
    opts.progress = Some(counter.clone());
    let forks = args.common.session.fleet.forks;
    let shown = !args.common.json && std::io::stderr().is_terminal();
    // The sources are walked for their size only when the line is drawn:
    // a script's copy of a large tree does not pay for a second walk.
    let total = shown.then(|| {
        plan.iter().map(|(src, _)| source_bytes(src)).sum::<u64>() * sends(&args.targets, forks)
    });
    let bytes = Bytes {
        counter,
        total,
        shown,
    };
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
        forks,
        group_of,
        work,
        printer,
        bytes,
    )
}

/// The content bytes of the regular files of `src` (a file or a tree; links
/// are not followed, as the push does not follow them): what a push sends
/// when the target has none of them. What cannot be read counts nothing
/// here (the push reports it).
fn source_bytes(src: &Path) -> u64 {
    match std::fs::symlink_metadata(src) {
        Ok(m) if m.is_file() => m.len(),
        Ok(m) if m.is_dir() => std::fs::read_dir(src)
            .map(|dir| dir.flatten().map(|e| source_bytes(&e.path())).sum())
            .unwrap_or(0),
        _ => 0,
    }
}

/// How many times this process sends the sources: once per target, except
/// that the targets behind one shared first hop (a group, all in one job)
/// get them once, staged on the hop (`push_all`), which sends them on.
fn sends(targets: &[Target], forks: usize) -> u64 {
    super::schedule::jobs(targets, forks, true)
        .iter()
        .map(|job| {
            let mut keys: Vec<String> = Vec::new();
            let mut alone = 0;
            for &i in job {
                match group_of(&targets[i]) {
                    Some(k) if !keys.contains(&k) => keys.push(k),
                    Some(_) => {}
                    None => alone += 1,
                }
            }
            alone + keys.len() as u64
        })
        .sum()
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
    fn a_shared_hop_is_sent_to_once_whatever_j_is() {
        let t = |v: &[&str]| {
            v.iter()
                .map(|s| s.parse().unwrap())
                .collect::<Vec<Target>>()
        };
        assert_eq!(sends(&t(&["web1", "web2", "web1"]), 10), 3);
        assert_eq!(sends(&t(&["b/w1", "b/w2", "b/w3", "web1"]), 10), 2);
        assert_eq!(sends(&t(&["b/w1", "b/w2", "b/w3", "web1"]), 2), 2);
        assert_eq!(sends(&t(&["web1", "web1/sudo"]), 10), 2);
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
