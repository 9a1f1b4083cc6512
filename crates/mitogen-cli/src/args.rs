//! Command-line arguments: what the user asked for, and nothing about how it is
//! done. Building and running live in [`crate::run`] and [`crate::bench`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};
use mitogen::Hop;
use mitogen::{ConnectOptions, Target};

use crate::become_user::BecomeArgs;
use crate::fleet::FleetArgs;
use crate::reuse::ReuseArgs;
use crate::transfer::args::{CopyArgs, FetchArgs, COPY_AFTER_HELP, FETCH_AFTER_HELP};

/// Exit codes of `mitogen run`, shown in its `--help`.
const RUN_EXIT_CODES: &str = "\
Exit status:
  0  every target ran the command and it exited with status 0
  1  every target ran the command, and at least one command exited non-zero
     or was killed by a signal
  2  usage error (bad option, bad target syntax, no command, a hosts file
     that cannot be read or has a bad line)
  3  at least one target could not be connected, could not start the
     command, or timed out (takes precedence over 1)

Examples:
  mitogen run local -- uname -a
  mitogen run local local --json -- sh -c 'echo $$'
  mitogen run --timeout 5 local -- sleep 10
  mitogen run deploy@web1:2222 -o IdentityFile=~/.ssh/deploy -- df -h /
  mitogen run -F ./ssh_config web1 web2 -- uptime
  mitogen run --ask-password sudo:app -- id
  mitogen run --password-file ~/.pw deploy@web1/sudo -- id
  mitogen run --password-file su:bob=bob.pw --password-file su:bob/sudo=bob.pw su:bob/sudo -- id
  mitogen run -H web.hosts -j 50 --timeout 30 -- systemctl is-active nginx
  mitogen run -b --become-user app -H web.hosts -- id
  mitogen run --no-reuse web1 -- uptime

Hosts files (-H FILE): one target per line, blank lines and '#' comments
ignored. At most -j targets (default 10) connect or run at once; hops shared
by several targets are connected once and kept to the end. --timeout counts
from each target's own start. On a terminal, a progress line on stderr; with
more than one target, a summary line on stderr at the end (not with --json).
An ssh login this command makes stays for --reuse SECS (60) after its use,
for the next command to the same host.
Control characters in a target's output are shown as ^M, ^[, \\x9b, never
obeyed.";

/// The keys and exit codes of `mitogen bench`, shown in its `--help`.
const BENCH_AFTER_HELP: &str = "\
Keys (medians; the same definitions as benches/python/bench_mitogen.py):
  connect_ms             start a new context and get its first call's result
  rtt_us                 one sequential no-op call
  pipelined_calls_per_s  many no-op calls issued at once, then all collected
  throughput_mib_s       --mib MiB streamed child to master in 1 MiB chunks
  child_rss_kib          the child's VmRSS after the calls, before streaming

With --cpu, this key is added:
  cpu_ms_per_gib         CPU time (user + system, all threads) per GiB streamed
                         of every process on the path: this one first, then
                         each hop's context, the measured one last. Shows what
                         each relay of a chain costs beside the two ends

For an ssh target ([user@]host[:port]), connect_ms is with the program
already in the remote cache, and these keys are added (same ssh options):
  connect_cold_ms        connect_ms with the remote cache emptied before each
                         sample (with `ssh HOST rm -rf ...`, untimed)
  ssh_floor_ms           `ssh HOST true`, interleaved with the connect samples
  cat_mib_s              MiB/s that `ssh HOST 'cat > /dev/null'` takes in (--mib
                         MiB, timed from the remote shell's start to ssh's exit)
  pull_mib_s             the same from the remote to the master (`dd` of
                         /dev/zero), the streaming benchmark's direction

For a target ending with a sudo hop on this machine (sudo[:USER],
local/sudo[:USER]), this key is added:
  floor_ms               `sudo -n -u USER true`, interleaved with the connect
                         samples (needs a NOPASSWD rule for the caller)

For a chain of two or more ssh and sudo hops (HOST/sudo[:USER],
HOST/HOST/sudo[:USER]), connect_ms starts the whole chain (every hop's cache
filled first), and this key is added:
  floor_ms               each hop's `ssh HOST true` or `sudo -n -u USER true`,
                         one after the other, summed; interleaved with the
                         connect samples. All run on this machine: exact when
                         every host is this machine (loopback), an estimate
                         otherwise

For one container or exec hop (docker:C, podman:C, exec:PROG,ARG,…), this
key is added:
  floor_ms               the hop's own command running `true` instead of
                         mitogen (`docker exec --interactive -- C true`),
                         interleaved with the connect samples

With --files (or --files-only: these keys alone), file transfer, every
transfer after sync(2) on both sides:
  push_mib_s             push a --file-mib MiB file into the target's TMPDIR
  fetch_mib_s            fetch that copy back
  small_files_per_s      push a tree of --tree-files files of 1 KiB
  repush_ms              push the same tree again, unchanged
  repush_skipped         files the re-pushes left alone
  repush_warm_ms         and again, after a push more than 2 s later
                         (both sides know every file's stamp: none read)
  peak_rss_kib           VmHWM (KiB) after all of it: this process, then
                         every hop's context, the target last
With --cpu as well:
  push_cpu_ms_per_gib    CPU time per GiB pushed of every process on the
  fetch_cpu_ms_per_gib   path (as cpu_ms_per_gib), and per GiB fetched

Exit status: 0 measured, 2 usage error, 3 the target failed.";

/// Run commands in, copy files to and from, and measure mitogen contexts.
///
/// A TARGET is a chain of hops separated by '/': `local` (a new process of
/// this program), `[user@]host[:port]` (ssh), `sudo[:user]`, `su[:user]`,
/// `doas[:user]`, `docker:[user@]CONTAINER`, `docker-run:IMAGE`, `podman:…`,
/// `kubectl:POD`, `lxc:`, `lxd:`, `incus:`, `buildah:`, `machinectl:`,
/// `exec:PROG,ARG,…` (a `/` or `,` inside a value is written %2F, %2C). A method this build does not have yet fails its target with
/// a clear message.
#[derive(Debug, Parser)]
#[command(name = "mitogen", version, propagate_version = true)]
pub struct Cli {
    /// More log output on stderr: -v info, -vv debug, -vvv trace. The
    /// MITOGEN_LOG (or RUST_LOG) environment variable adds tracing filter
    /// directives on top.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in each target and print its output and exit status.
    #[command(after_help = RUN_EXIT_CODES)]
    Run(RunArgs),
    /// Measure connect time, call latency, call rate, throughput and child memory.
    #[command(after_help = BENCH_AFTER_HELP)]
    Bench(BenchArgs),
    /// Copy local files and trees to every target (verified, atomic,
    /// unchanged files skipped; shared hops crossed once).
    #[command(after_help = COPY_AFTER_HELP)]
    Copy(CopyArgs),
    /// Fetch files and trees from every target into a local directory per
    /// target.
    #[command(after_help = FETCH_AFTER_HELP)]
    Fetch(FetchArgs),
    /// Show what each target is: system, kernel, CPUs, memory, disks,
    /// addresses, user (read there, no program run).
    #[command(after_help = crate::facts::FACTS_AFTER_HELP)]
    Facts(crate::facts::FactsArgs),
}

/// Arguments of `mitogen run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Where to run the command (one or more, here or in a hosts file; up
    /// to -j at once).
    #[arg(required_unless_present = "hosts", value_name = "TARGET", value_parser = parse_target)]
    pub targets: Vec<Target>,

    /// The command and its arguments, after `--`. It is executed directly,
    /// not through a shell: use `sh -c '...'` for pipes and redirections.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,

    /// Print one JSON object per target per line instead of prefixed text.
    #[arg(long)]
    pub json: bool,

    /// Give up on a target after this many seconds (connecting plus running,
    /// from its own start); a target that times out counts as failed (exit
    /// status 3).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub timeout: Option<Duration>,

    /// Which targets, how they are reached, how many at once.
    #[command(flatten)]
    pub session: SessionArgs,
}

/// What every command working on a fleet of targets takes beside them:
/// `run`, `copy`, `fetch` and `facts` (not `bench`, which measures one
/// target with cold logins).
#[derive(Debug, Args)]
pub struct SessionArgs {
    /// Hosts files and the concurrency limit.
    #[command(flatten)]
    pub fleet: FleetArgs,

    /// How ssh hops are made.
    #[command(flatten)]
    pub connect: ConnectArgs,

    /// ssh connection reuse between commands.
    #[command(flatten)]
    pub reuse: ReuseArgs,

    /// A user switch hop after every target.
    #[command(flatten)]
    pub switch: BecomeArgs,
}

impl SessionArgs {
    /// The targets to work on: those of the hosts files, then `given`,
    /// each with the `--become` hop added; and the ssh options made to
    /// reuse logins as asked. An error is a usage error's message.
    pub fn prepare(&mut self, given: Vec<Target>) -> Result<Vec<Target>, String> {
        let targets = self.fleet.targets(given)?;
        self.connect.reuse = self.reuse.ssh_reuse()?;
        self.switch.apply(targets)
    }
}

/// Arguments of `mitogen bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The context to measure.
    #[arg(long, default_value = "local", value_parser = parse_target)]
    pub target: Target,

    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Fewer repetitions (a smoke test, not a measurement).
    #[arg(long)]
    pub quick: bool,

    /// MiB streamed per throughput run.
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub mib: u32,

    /// Also report the CPU time each process on the path (this one, every
    /// hop) spends per GiB streamed: the key `cpu_ms_per_gib`.
    #[arg(long)]
    pub cpu: bool,

    /// Also measure file transfer: push and fetch a file of --file-mib MiB,
    /// push a tree of --tree-files files of 1 KiB, then push it again
    /// unchanged (the keys listed below).
    #[arg(long)]
    pub files: bool,

    /// Measure file transfer only (the keys of --files, nothing else).
    #[arg(long, conflicts_with = "files")]
    pub files_only: bool,

    /// MiB of the file pushed and fetched by --files.
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub file_mib: u32,

    /// Push and fetch this existing file instead of one of --file-mib MiB
    /// made for the run (whose writing, just before the push, would leave
    /// the page cache in another state than a file made earlier).
    #[arg(long, value_name = "FILE")]
    pub file_from: Option<PathBuf>,

    /// The large file's window (MiB in flight beyond what the receiver has
    /// written; the library's default unless given), for tuning.
    #[arg(long, value_name = "MIB",
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub file_window: Option<u32>,

    /// The large file's frame size (KiB; the library's default unless
    /// given), for tuning.
    #[arg(long, value_name = "KIB",
          value_parser = clap::value_parser!(u32).range(4..=16384))]
    pub file_chunk: Option<u32>,

    /// Files of 1 KiB in the tree pushed by --files.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub tree_files: u32,

    /// Timed runs of each transfer of --files (default 3, 1 with --quick).
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub file_runs: Option<u32>,

    /// Leave the trees of --files (the source and every copy) in the
    /// temporary directories at the end, for a caller that removes them
    /// later: on ext4 without a journal, files made within a minute of
    /// many deletions are slower to make, which would charge whatever runs
    /// next.
    #[arg(long)]
    pub keep_trees: bool,

    /// How ssh hops are made.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Options for ssh and switch-user hops, shared by `run` and `bench`. `-F`
/// and `-o` are spelled as ssh's own flags so that users can carry them over
/// unchanged.
#[derive(Clone, Debug, Default, Args)]
pub struct ConnectArgs {
    /// ssh configuration file, passed to ssh as `-F FILE`.
    #[arg(short = 'F', value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,

    /// An ssh option, passed to ssh as `-o OPTION` (repeatable), e.g.
    /// `-o IdentityFile=~/.ssh/deploy -o StrictHostKeyChecking=accept-new`.
    #[arg(short = 'o', value_name = "OPTION", action = ArgAction::Append)]
    pub ssh_options: Vec<String>,

    /// Seconds allowed for each hop to connect and start the program
    /// (default 30; ssh's own connect timeout takes whole seconds).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub connect_timeout: Option<Duration>,

    /// Read a password from the first line of FILE (never give a password on
    /// the command line). `HOP=FILE` is the password of one hop, named by its
    /// path in the target (`web1/sudo:app`; an ssh hop's is its login's); a
    /// plain FILE is for each target's one sudo, su or doas hop (a target
    /// with more than one is refused). Repeatable.
    #[arg(
        long,
        value_name = "[HOP=]FILE",
        conflicts_with = "ask_password",
        action = ArgAction::Append
    )]
    pub password_file: Vec<PathBuf>,

    /// Ask on the terminal, with echo off and before connecting, for the
    /// password of every sudo, su and doas hop of the targets, once per hop
    /// path: each password goes to its own hop only.
    #[arg(long)]
    pub ask_password: bool,

    /// Connection reuse for the first hop of each target, set from
    /// [`ReuseArgs`] by the subcommands that take it (never by `bench`).
    #[arg(skip)]
    pub reuse: Option<mitogen::SshReuse>,
}

/// The path of every hop of `targets` (`web1`, `web1/sudo:app`, …), each once,
/// in order, with its hop.
fn hop_paths<'a>(targets: &[&'a Target]) -> Vec<(String, &'a Hop)> {
    let mut out: Vec<(String, &Hop)> = Vec::new();
    for t in targets {
        for (i, hop) in t.hops().iter().enumerate() {
            let path = t.prefix(i + 1);
            if !out.iter().any(|(p, _)| *p == path) {
                out.push((path.clone(), hop));
            }
        }
    }
    out
}

/// Splits `HOP=FILE` when HOP is the path of a hop of the targets; anything
/// else is a file name (which may hold a `=`).
fn split_hop_file<'a>(
    arg: &'a std::path::Path,
    paths: &[(String, &Hop)],
) -> Option<(&'a str, &'a str)> {
    let (hop, file) = arg.to_str()?.split_once('=')?;
    paths.iter().any(|(p, _)| p == hop).then_some((hop, file))
}

/// Whose password a switch hop's tool asks for, for the question.
fn whose(hop: &Hop) -> Option<String> {
    match hop {
        Hop::Sudo { .. } | Hop::Doas { .. } => Some("the calling user's".to_owned()),
        Hop::Su { user } => Some(format!("{}'s", user.as_deref().unwrap_or("root"))),
        _ => None,
    }
}

impl ConnectArgs {
    /// [`options`](Self::options) with the passwords for `targets`, read from
    /// `--password-file` or asked for with `--ask-password`.
    pub fn connect_options(&self, targets: &[&Target]) -> anyhow::Result<ConnectOptions> {
        let mut options = self.options();
        let paths = hop_paths(targets);
        let read = |f: &std::path::Path| {
            mitogen::Secret::from_file(f)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", f.display()))
        };
        for f in &self.password_file {
            match split_hop_file(f, &paths) {
                Some((hop, file)) => {
                    let secret = read(std::path::Path::new(file))?;
                    if options
                        .hop_passwords
                        .insert(hop.to_owned(), secret)
                        .is_some()
                    {
                        anyhow::bail!("two --password-file for hop {hop}");
                    }
                }
                None if options.password.is_some() => anyhow::bail!(
                    "two --password-file without a hop: name the hop of each (HOP=FILE)"
                ),
                None => options.password = Some(read(f)?),
            }
        }
        if self.ask_password {
            for (path, hop) in &paths {
                if let Some(whose) = whose(hop) {
                    let question = format!("Password for {path} ({whose}): ");
                    let secret = crate::password::ask(&question)?;
                    options.hop_passwords.insert(path.clone(), secret);
                }
            }
        }
        Ok(options)
    }

    /// The library's options for these flags, so the CLI reaches hosts
    /// exactly as `Router::connect_with` does for any program.
    pub fn options(&self) -> ConnectOptions {
        ConnectOptions {
            ssh_config: self.ssh_config.clone(),
            ssh_options: self.ssh_options.clone(),
            connect_timeout: self.connect_timeout,
            ssh_reuse: self.reuse.clone(),
            ..Default::default()
        }
    }
}

/// Parses a target with the library's parser, so the CLI accepts exactly what
/// programs using the library accept.
pub(crate) fn parse_target(s: &str) -> Result<Target, String> {
    s.parse::<Target>().map_err(|e| e.to_string())
}

/// Parses a positive, finite number of seconds (fractions allowed).
pub(crate) fn parse_secs(s: &str) -> Result<Duration, String> {
    seconds(s, false)
}

/// Parses a finite number of seconds, zero or more (fractions allowed).
pub(crate) fn parse_secs_or_zero(s: &str) -> Result<Duration, String> {
    seconds(s, true)
}

fn seconds(s: &str, zero: bool) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs.is_finite() && (secs > 0.0 || zero && secs == 0.0)) {
        return Err(if zero {
            format!("{s:?} must be zero or more seconds")
        } else {
            format!("{s:?} must be a positive number of seconds")
        });
    }
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_run() {
        let cli =
            Cli::try_parse_from(["mitogen", "run", "local", "local", "--", "echo", "-n", "hi"])
                .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.targets.len(), 2);
        assert_eq!(run.command, ["echo", "-n", "hi"]);
    }

    #[test]
    fn ssh_flags_map_to_connect_options() {
        let cli = Cli::try_parse_from([
            "mitogen",
            "run",
            "-F",
            "/etc/cfg",
            "-o",
            "Port=2",
            "root@web1:2222",
            "-o",
            "IdentityFile=/k",
            "--connect-timeout",
            "1.5",
            "--",
            "true",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        let o = run.session.connect.options();
        assert_eq!(
            o.ssh_config.as_deref(),
            Some(std::path::Path::new("/etc/cfg"))
        );
        assert_eq!(o.ssh_options, ["Port=2", "IdentityFile=/k"]);
        assert_eq!(o.connect_timeout, Some(Duration::from_millis(1500)));
        // After `--`, ssh-like flags belong to the command.
        assert_eq!(run.command, ["true"]);

        let cli = Cli::try_parse_from(["mitogen", "bench", "--target", "web1", "-oBatchMode=yes"])
            .unwrap();
        let Command::Bench(bench) = cli.command else {
            panic!("not bench")
        };
        assert_eq!(bench.connect.options().ssh_options, ["BatchMode=yes"]);
        assert!(bench.connect.options().ssh_config.is_none());
        assert!(bench.connect.options().connect_timeout.is_none());
    }

    #[test]
    fn password_files_are_matched_to_hop_paths() {
        let a: Target = "web1/sudo:app".parse().unwrap();
        let b: Target = "web1/su:bob/sudo".parse().unwrap();
        let paths = hop_paths(&[&a, &b]);
        let names: Vec<&str> = paths.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            names,
            ["web1", "web1/sudo:app", "web1/su:bob", "web1/su:bob/sudo"]
        );
        let split = |s: &'static str| split_hop_file(std::path::Path::new(s), &paths);
        assert_eq!(split("web1/su:bob=/k/pw"), Some(("web1/su:bob", "/k/pw")));
        assert_eq!(split("web1=a=b"), Some(("web1", "a=b")));
        // Not a hop of these targets: a file name with a `=` in it.
        assert_eq!(split("sudo=/k/pw"), None);
        assert_eq!(split("/k/pw"), None);
        assert_eq!(whose(paths[2].1).as_deref(), Some("bob's"));
        assert!(whose(paths[0].1).is_none());
    }

    #[test]
    fn refuses_bad_input() {
        for argv in [
            &["mitogen", "run", "local"][..],
            &["mitogen", "run", "--", "true"],
            &["mitogen", "run", "a//b", "--", "true"],
            &["mitogen", "run", "--timeout", "0", "local", "--", "true"],
            &["mitogen", "bench", "--mib", "0"],
            &["mitogen", "bench", "--connect-timeout", "-1"],
            &["mitogen", "run", "-o", "--", "true"],
        ] {
            assert!(Cli::try_parse_from(argv).is_err(), "{argv:?}");
        }
    }
}
