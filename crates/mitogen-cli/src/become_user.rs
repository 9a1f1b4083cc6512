//! `--become` (ansible's `-b`, `--become-user`, `--become-method`): a user
//! switch hop after every target, so that `mitogen run -b -H web.hosts --
//! CMD` is `web1/sudo`, `web2/sudo`, ... without writing the hop on every
//! line. The hop is an ordinary one of the target: it is named, asked a
//! password for and shared as if it had been written out.

use clap::{Args, ValueEnum};
use mitogen::{Hop, Target};

/// The tool that switches user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum BecomeMethod {
    /// `sudo[:USER]`
    #[default]
    Sudo,
    /// `su[:USER]`
    Su,
    /// `doas[:USER]`
    Doas,
}

/// Options that add a user switch hop to every target of `run`, `copy` and
/// `fetch`.
#[derive(Clone, Debug, Default, Args)]
pub struct BecomeArgs {
    /// Run as another user (root unless --become-user) on each target: a
    /// `sudo` hop (or --become-method's) is added after every target, from
    /// the command line and hosts files alike (`web1` becomes `web1/sudo`).
    #[arg(short = 'b', long = "become")]
    pub become_: bool,

    /// The user to become (implies --become).
    #[arg(long, value_name = "USER")]
    pub become_user: Option<String>,

    /// The tool that switches user (implies --become).
    #[arg(long, value_name = "METHOD", value_enum)]
    pub become_method: Option<BecomeMethod>,
}

impl BecomeArgs {
    /// The hop to add, if any; a user name the target syntax cannot hold is
    /// an error naming it.
    pub fn hop(&self) -> Result<Option<Hop>, String> {
        if !(self.become_ || self.become_user.is_some() || self.become_method.is_some()) {
            return Ok(None);
        }
        let user = self.become_user.clone();
        if let Some(u) = &user {
            // The hop's own parser decides what a user name may be, so that
            // `-b --become-user U` and a target ending `/sudo:U` agree.
            format!("sudo:{u}")
                .parse::<Target>()
                .ok()
                .filter(|t| t.hops().len() == 1)
                .ok_or_else(|| format!("--become-user {u:?} is not a user name"))?;
        }
        Ok(Some(match self.become_method.unwrap_or_default() {
            BecomeMethod::Sudo => Hop::Sudo { user },
            BecomeMethod::Su => Hop::Su { user },
            BecomeMethod::Doas => Hop::Doas { user },
        }))
    }

    /// `targets`, each with the hop added when asked for.
    pub fn apply(&self, targets: Vec<Target>) -> Result<Vec<Target>, String> {
        Ok(match self.hop()? {
            Some(hop) => targets.iter().map(|t| t.join(hop.clone())).collect(),
            None => targets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(s: &[&str]) -> Vec<Target> {
        s.iter().map(|t| t.parse().unwrap()).collect()
    }

    fn shown(t: &[Target]) -> Vec<String> {
        t.iter().map(Target::to_string).collect()
    }

    #[test]
    fn the_hop_goes_after_every_target() {
        let b = BecomeArgs {
            become_: true,
            ..Default::default()
        };
        let t = b
            .apply(targets(&["web1", "bastion/web2", "chroot:/srv"]))
            .unwrap();
        assert_eq!(
            shown(&t),
            ["web1/sudo", "bastion/web2/sudo", "chroot:[/srv]/sudo"]
        );
        let none = BecomeArgs::default().apply(targets(&["web1"])).unwrap();
        assert_eq!(shown(&none), ["web1"]);
    }

    #[test]
    fn user_and_method_imply_become() {
        let b = BecomeArgs {
            become_user: Some("app".into()),
            become_method: Some(BecomeMethod::Su),
            ..Default::default()
        };
        assert_eq!(
            shown(&b.apply(targets(&["web1"])).unwrap()),
            ["web1/su:app"]
        );
        let b = BecomeArgs {
            become_method: Some(BecomeMethod::Doas),
            ..Default::default()
        };
        assert_eq!(
            shown(&b.apply(targets(&["local"])).unwrap()),
            ["local/doas"]
        );
    }

    #[test]
    fn a_user_name_the_syntax_cannot_hold_is_refused() {
        for bad in ["a/b", ""] {
            let b = BecomeArgs {
                become_user: Some(bad.into()),
                ..Default::default()
            };
            assert!(b.hop().unwrap_err().contains("not a user name"), "{bad:?}");
        }
    }
}
