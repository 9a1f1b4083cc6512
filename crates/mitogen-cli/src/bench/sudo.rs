//! The floor of a sudo target: `sudo -n -u USER true`, timed in the same run
//! as the context, so that what mitogen adds on top of sudo itself can be read
//! off (the target is stated against it).
//!
//! Only targets whose sudo hop runs on this machine have one (`sudo[:USER]`,
//! `local/…/sudo[:USER]`): the floor is run here, by this process's user,
//! which is also the user the context's sudo runs as. `-n` makes it fail at
//! once instead of prompting, so the floor needs a `NOPASSWD` rule for that
//! user; a rule that wants a password is reported as an error, never a hang.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use mitogen::Hop;
use mitogen::Target;

/// How often a running sudo is checked for its exit: short next to the few
/// milliseconds sudo takes.
const POLL: Duration = Duration::from_micros(50);

/// Time allowed for `sudo true`; a policy that would prompt fails at once
/// under `-n`, so only a wedged system gets near it.
const DEADLINE: Duration = Duration::from_secs(30);

/// `sudo -n -u USER true` for the sudo hop of a target.
#[derive(Clone, Debug)]
pub struct SudoFloor {
    user: String,
}

impl SudoFloor {
    /// The floor of `target` when it ends with a sudo hop reached through
    /// `local` hops only (so sudo runs on this machine as this user); `None`
    /// otherwise.
    pub fn for_target(target: &Target) -> Option<SudoFloor> {
        let (last, before) = target.hops().split_last()?;
        let Hop::Sudo { user } = last else {
            return None;
        };
        if !before.iter().all(|h| matches!(h, Hop::Local)) {
            return None;
        }
        Some(SudoFloor::for_user(user.as_deref()))
    }

    /// `sudo -n -u USER true` run here, for a sudo hop to `user` (default
    /// root).
    pub fn for_user(user: Option<&str>) -> SudoFloor {
        SudoFloor {
            user: user.unwrap_or("root").to_owned(),
        }
    }

    /// The command, as the library's sudo method runs sudo: the same program
    /// from `PATH`, non-interactive, as the same user.
    pub fn command_line(&self) -> Vec<String> {
        ["sudo", "-n", "-u", &self.user, "true"]
            .map(str::to_owned)
            .to_vec()
    }

    /// Milliseconds from starting sudo until it exits.
    pub fn true_ms(&self) -> anyhow::Result<f64> {
        let argv = self.command_line();
        let t0 = Instant::now();
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", argv.join(" ")))?;
        let deadline = t0 + DEADLINE;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("`{}` did not finish in time; killed it", argv.join(" "));
            }
            std::thread::sleep(POLL);
        };
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        if !status.success() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            bail!(
                "`{}` failed ({status}): {}; the sudo floor needs a NOPASSWD rule for this user",
                argv.join(" "),
                err.trim()
            );
        }
        Ok(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floor(target: &str) -> Option<Vec<String>> {
        SudoFloor::for_target(&target.parse().unwrap()).map(|f| f.command_line())
    }

    #[test]
    fn only_a_sudo_hop_on_this_machine_has_a_floor() {
        assert_eq!(
            floor("local/sudo:app").unwrap(),
            ["sudo", "-n", "-u", "app", "true"]
        );
        assert_eq!(floor("sudo").unwrap()[3], "root");
        assert!(floor("local/local/sudo:app").is_some());
        assert!(floor("local").is_none());
        assert!(floor("web1/sudo").is_none());
        assert!(floor("sudo/local").is_none());
        assert!(floor("su:app").is_none());
    }
}
