//! The floor of a chain of ssh and sudo hops (`web1/sudo:app`,
//! `bastion/web1/sudo:app`): the sum of what each hop's tool costs by itself,
//! `ssh [OPTIONS] HOST true` for an ssh hop and `sudo -n -u USER true` for a
//! sudo hop, timed in the same run as the context, so that what mitogen adds
//! on top of the tools can be read off.
//!
//! Every hop's floor runs on this machine, as this process's user. That is
//! the hop's own cost when every host of the chain is this machine (a chain
//! through loopback sshd, as `benches/compare.py --chain-ssh` builds) and the
//! ssh hops log in as this user; for a chain through other hosts it is an
//! estimate, since the real hops after the first run on those hosts.

use anyhow::Context as _;
use mitogen::Hop;
use mitogen::{ConnectOptions, Target};

use super::ssh::SshFloor;
use super::sudo::SudoFloor;

/// The floor of one hop.
#[derive(Clone, Debug)]
enum HopFloor {
    Ssh(SshFloor),
    Sudo(SudoFloor),
}

/// The floors of every hop of a chain, run one after the other.
#[derive(Clone, Debug)]
pub struct ChainFloor {
    hops: Vec<HopFloor>,
}

impl ChainFloor {
    /// The floor of `target` when it has two hops or more and every one is
    /// an ssh or a sudo hop; `None` otherwise (single hops have floors of
    /// their own, and `local`, `su` and `doas` hops have none).
    pub fn for_target(target: &Target, options: &ConnectOptions) -> Option<ChainFloor> {
        if target.hops().len() < 2 {
            return None;
        }
        let hops = target
            .hops()
            .iter()
            .map(|hop| match hop {
                Hop::Ssh { .. } => SshFloor::for_hop(hop, options).map(HopFloor::Ssh),
                Hop::Sudo { user } => Some(HopFloor::Sudo(SudoFloor::for_user(user.as_deref()))),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Some(ChainFloor { hops })
    }

    /// The commands, one per hop, in the chain's order.
    #[cfg(test)]
    fn command_lines(&self) -> Vec<Vec<String>> {
        self.hops
            .iter()
            .map(|h| match h {
                HopFloor::Ssh(f) => f.command_line("true"),
                HopFloor::Sudo(f) => f.command_line(),
            })
            .collect()
    }

    /// Milliseconds of every hop's floor, one after the other, summed.
    pub fn true_ms(&self) -> anyhow::Result<f64> {
        let mut sum = 0.0;
        for (i, hop) in self.hops.iter().enumerate() {
            sum += match hop {
                HopFloor::Ssh(f) => f.true_ms(),
                HopFloor::Sudo(f) => f.true_ms(),
            }
            .with_context(|| format!("timing the floor of hop {}", i + 1))?;
        }
        Ok(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floor(target: &str) -> Option<Vec<String>> {
        let options = ConnectOptions {
            ssh_options: vec!["IdentityFile=/k".into()],
            ..Default::default()
        };
        ChainFloor::for_target(&target.parse().unwrap(), &options)
            .map(|f| f.command_lines().iter().map(|c| c.join(" ")).collect())
    }

    #[test]
    fn a_chain_of_ssh_and_sudo_hops_has_one_floor_per_hop() {
        let f = floor("root@web1:2222/root@web1:2222/sudo:app").unwrap();
        assert_eq!(f.len(), 3);
        for ssh in &f[..2] {
            assert!(ssh.starts_with("ssh -o BatchMode=yes"), "{ssh}");
            assert!(
                ssh.ends_with("-l root -p 2222 -o IdentityFile=/k -- web1 true"),
                "{ssh}"
            );
        }
        assert_eq!(f[2], "sudo -n -u app true");
        assert_eq!(floor("web1/sudo").unwrap()[1], "sudo -n -u root true");
    }

    #[test]
    fn single_hops_and_other_methods_have_none() {
        assert!(floor("web1").is_none());
        assert!(floor("sudo:app").is_none());
        assert!(floor("local/sudo:app").is_none());
        assert!(floor("web1/local").is_none());
        assert!(floor("web1/su:app").is_none());
    }
}
