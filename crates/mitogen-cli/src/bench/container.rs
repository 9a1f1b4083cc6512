//! The floor of a container or exec hop (`docker:C`, `exec:…`): the hop's
//! own command running `true` instead of the first stage (`docker exec
//! --interactive -- C true`), timed in the same run as the context, so that
//! what mitogen adds on top of the engine's own exec can be read off.

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{ensure, Context as _};
use mitogen::{Hop, Target};

/// The floor of a one-hop container target.
#[derive(Clone, Debug)]
pub struct ContainerFloor {
    argv: Vec<String>,
}

impl ContainerFloor {
    /// The floor of `target` when it is one container or exec hop.
    pub fn for_target(target: &Target) -> Option<ContainerFloor> {
        match target.hops() {
            [Hop::Container(c)] => {
                let mut argv = c.argv();
                if argv.is_empty() {
                    return None;
                }
                argv.push("true".into());
                Some(ContainerFloor { argv })
            }
            _ => None,
        }
    }

    /// The command timed.
    #[cfg(test)]
    fn command_line(&self) -> &[String] {
        &self.argv
    }

    /// Milliseconds of one run of the command.
    pub fn true_ms(&self) -> anyhow::Result<f64> {
        let t0 = Instant::now();
        let status = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("running {:?}", self.argv))?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        ensure!(status.success(), "{:?}: {status}", self.argv);
        Ok(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_is_the_hops_command_running_true() {
        let t: Target = "docker:app@c1".parse().unwrap();
        let f = ContainerFloor::for_target(&t).unwrap();
        assert_eq!(
            f.command_line(),
            [
                "docker",
                "exec",
                "--interactive",
                "--user=app",
                "--",
                "c1",
                "true"
            ]
        );
        let t: Target = "local/docker:c1".parse().unwrap();
        assert!(ContainerFloor::for_target(&t).is_none());
    }
}
