//! The floors of an ssh target: what the system `ssh` itself costs with the
//! same options, measured in the same run as the context, so that the figures
//! above those floors are the part mitogen adds.
//!
//! Every command here runs under a deadline and is killed when it passes: a
//! wedged ssh turns into an error, never a hang.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use mitogen::{ConnectOptions, Hop, Ssh, Target};

/// How often a running ssh is checked for its exit: short next to the
/// hundreds of milliseconds an ssh login takes, cheap on the CPU.
const POLL: Duration = Duration::from_micros(100);

/// Time allowed past the connect timeout for a short remote command.
const COMMAND_GRACE: Duration = Duration::from_secs(30);

/// Bytes per chunk of the transfers: the streaming benchmark's chunk size.
const MIB: usize = 1 << 20;

/// Time allowed past the connect timeout for a transfer of the streamed bytes.
const STREAM_GRACE: Duration = Duration::from_secs(120);

/// Empties every cache directory the first stage may use
/// (`crates/mitogen/src/parent/first_stage.rs`), so the next connection
/// uploads the program.
const CLEAR_CACHE: &str = "U=$(id -u); \
     rm -rf \"${XDG_CACHE_HOME:-${HOME:-/nonexistent}/.cache}/mitogen\" \
     \"${TMPDIR:-/tmp}/mitogen-$U\" \"/dev/shm/mitogen-$U\"";

/// What the remote shell prints before `cat` starts: the timed region of the
/// cat floor begins when it arrives, so the login is not counted as transfer.
const READY: &[u8] = b"ready\n";

/// Plain ssh commands to the host of a one-hop ssh target, with the options
/// that the library's ssh method gives ssh for the same target.
#[derive(Clone, Debug)]
pub struct SshFloor {
    /// Everything before the remote command: program, options, `--`, host.
    argv: Vec<String>,
    config: Option<PathBuf>,
    connect_timeout: Duration,
}

impl SshFloor {
    /// The floor of `target` when it is a single ssh hop; `None` otherwise
    /// (a local target has no ssh to compare with).
    pub fn for_target(target: &Target, options: &ConnectOptions) -> Option<SshFloor> {
        match target.hops() {
            [hop] => SshFloor::for_hop(hop, options),
            _ => None,
        }
    }

    /// Plain ssh to the host of `hop`, run from this machine; `None` when
    /// `hop` is not an ssh hop.
    pub fn for_hop(hop: &Hop, options: &ConnectOptions) -> Option<SshFloor> {
        let Hop::Ssh { user, host, port } = hop else {
            return None;
        };
        let connect_timeout = options
            .connect_timeout
            .unwrap_or(Ssh::DEFAULT_CONNECT_TIMEOUT);
        // The same fixed options as `mitogen::Ssh` sets, in the
        // same order (ssh keeps the first value it sees of an option), so the
        // floor differs from a mitogen connection only in the remote command.
        let mut argv: Vec<String> = vec!["ssh".into()];
        let mut o = |opt: String| {
            argv.push("-o".into());
            argv.push(opt);
        };
        o("BatchMode=yes".into());
        o("LogLevel=ERROR".into());
        o("Compression=no".into());
        o(format!(
            "ConnectTimeout={}",
            connect_timeout.as_secs().max(1)
        ));
        o("ServerAliveInterval=15".into());
        o("ServerAliveCountMax=3".into());
        if let Some(u) = user {
            argv.extend(["-l".into(), u.clone()]);
        }
        if let Some(p) = port {
            argv.extend(["-p".into(), p.to_string()]);
        }
        for opt in &options.ssh_options {
            argv.extend(["-o".into(), opt.clone()]);
        }
        argv.extend(["--".into(), host.clone()]);
        Some(SshFloor {
            argv,
            config: options.ssh_config.clone(),
            connect_timeout,
        })
    }

    /// The ssh command line that runs `remote` (a shell command) on the host.
    pub fn command_line(&self, remote: &str) -> Vec<String> {
        let mut argv = self.argv.clone();
        if let Some(f) = &self.config {
            // `-F` must come before `--`; it is placed first, as ssh allows.
            argv.splice(1..1, ["-F".into(), f.display().to_string()]);
        }
        argv.push(remote.into());
        argv
    }

    fn command(&self, remote: &str) -> Command {
        let argv = self.command_line(remote);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        cmd
    }

    /// Milliseconds `ssh HOST true` takes, from spawning ssh to its exit.
    pub fn true_ms(&self) -> anyhow::Result<f64> {
        let t0 = Instant::now();
        let ended = self.run_short("true")?;
        Ok((ended - t0).as_secs_f64() * 1e3)
    }

    /// Removes the program from every remote cache directory.
    pub fn clear_cache(&self) -> anyhow::Result<()> {
        self.run_short(CLEAR_CACHE)
            .context("emptying the remote cache")?;
        Ok(())
    }

    /// Runs a short remote command; returns when it ended.
    fn run_short(&self, remote: &str) -> anyhow::Result<Instant> {
        let mut child = self
            .command(remote)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting ssh")?;
        let stderr = collect(child.stderr.take());
        let deadline = Instant::now() + self.connect_timeout + COMMAND_GRACE;
        let (status, ended) = wait_until(&mut child, deadline)?;
        check(status, stderr, remote)?;
        Ok(ended)
    }

    /// MiB per second that `ssh HOST 'cat > /dev/null'` takes in: `mib` MiB
    /// written in 1 MiB chunks, timed from the remote shell's first output
    /// (so not the login) until ssh has exited (so every byte has arrived).
    pub fn cat_mib_s(&self, mib: u32) -> anyhow::Result<f64> {
        self.transfer(
            "echo ready && exec cat > /dev/null",
            mib,
            move |stdin, _| {
                let chunk = vec![0u8; MIB];
                for _ in 0..mib {
                    stdin.write_all(&chunk)?;
                }
                Ok(())
            },
        )
    }

    /// MiB per second that `ssh HOST 'dd if=/dev/zero bs=1M count=N'`
    /// delivers to the master: the direction of the streaming benchmark
    /// (remote to master), timed as [`cat_mib_s`](Self::cat_mib_s).
    pub fn pull_mib_s(&self, mib: u32) -> anyhow::Result<f64> {
        let remote = format!("echo ready && exec dd if=/dev/zero bs={MIB} count={mib} 2>/dev/null");
        self.transfer(&remote, mib, move |_, stdout| {
            let expected = u64::from(mib) * MIB as u64;
            let got = std::io::copy(stdout, &mut std::io::sink())?;
            if got != expected {
                return Err(std::io::Error::other(format!(
                    "received {got} bytes, expected {expected}"
                )));
            }
            Ok(())
        })
    }

    /// Runs `remote`, which prints [`READY`] and then moves `mib` MiB;
    /// `work` feeds or drains ssh on a thread (so that this one can enforce
    /// the deadline: killing a wedged ssh unblocks it). Returns MiB/s from
    /// READY to ssh's exit.
    fn transfer<F>(&self, remote: &str, mib: u32, work: F) -> anyhow::Result<f64>
    where
        F: FnOnce(&mut ChildStdin, &mut ChildStdout) -> std::io::Result<()> + Send + 'static,
    {
        let mut child = self
            .command(remote)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting ssh")?;
        let stderr = collect(child.stderr.take());
        let mut stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let worker = std::thread::spawn(move || -> std::io::Result<Instant> {
            let mut ready = [0u8; READY.len()];
            stdout.read_exact(&mut ready)?;
            if ready != READY {
                return Err(std::io::Error::other(
                    "unexpected output before the transfer",
                ));
            }
            let t0 = Instant::now();
            work(&mut stdin, &mut stdout)?;
            // Closing stdin is what lets `cat` (and then ssh) finish.
            drop(stdin);
            Ok(t0)
        });
        let deadline = Instant::now() + self.connect_timeout + STREAM_GRACE;
        let (status, ended) = wait_until(&mut child, deadline)?;
        let t0 = worker.join().expect("transfer thread panicked");
        check(status, stderr, remote)?;
        let t0 = t0.with_context(|| format!("moving bytes through ssh {remote:?}"))?;
        Ok(f64::from(mib) / (ended - t0).as_secs_f64())
    }
}

/// Reads a child's stderr to its end on a thread, for error messages.
fn collect(stderr: Option<ChildStderr>) -> Option<JoinHandle<String>> {
    let mut stderr = stderr?;
    Some(std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    }))
}

/// Fails with ssh's own words when the command did not succeed.
fn check(
    status: ExitStatus,
    stderr: Option<JoinHandle<String>>,
    remote: &str,
) -> anyhow::Result<()> {
    if status.success() {
        return Ok(());
    }
    let said = stderr
        .and_then(|h| h.join().ok())
        .unwrap_or_default()
        .trim()
        .to_owned();
    bail!("ssh {remote:?} failed ({status}): {said}")
}

/// Waits for `child` to exit and returns when it did; kills it once
/// `deadline` has passed.
fn wait_until(child: &mut Child, deadline: Instant) -> anyhow::Result<(ExitStatus, Instant)> {
    loop {
        if let Some(status) = child.try_wait().context("waiting for ssh")? {
            return Ok((status, Instant::now()));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("ssh did not finish in time; killed it");
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floor(target: &str, options: &ConnectOptions) -> Option<SshFloor> {
        SshFloor::for_target(&target.parse().unwrap(), options)
    }

    #[test]
    fn only_a_single_ssh_hop_has_a_floor() {
        let none = ConnectOptions::default();
        assert!(floor("local", &none).is_none());
        assert!(floor("web1", &none).is_some());
    }

    #[test]
    fn options_reach_ssh_in_its_own_syntax() {
        let options = ConnectOptions {
            ssh_config: Some("/etc/cfg".into()),
            ssh_options: vec!["IdentityFile=/k".into(), "Port=9".into()],
            connect_timeout: Some(Duration::from_millis(2500)),
            ..Default::default()
        };
        let argv = floor("root@web1:2222", &options)
            .unwrap()
            .command_line("true");
        let text = argv.join(" ");
        assert!(
            text.starts_with("ssh -F /etc/cfg -o BatchMode=yes"),
            "{text}"
        );
        assert!(text.contains("-o ConnectTimeout=2 "), "{text}");
        assert!(
            text.ends_with("-l root -p 2222 -o IdentityFile=/k -o Port=9 -- web1 true"),
            "{text}"
        );
    }
}
