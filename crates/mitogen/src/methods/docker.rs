//! The `docker` and `podman` methods: a context inside a container, through
//! the engine's client (`docker exec -i`, or `docker run --rm -i` for a fresh
//! container that goes away with the context).
//!
//! Both are presets over the [exec hop](super::exec): the client runs the
//! [first stage](crate::parent::first_stage) in the container, which reports
//! the container's own system (`uname -sm`) and gets the matching build,
//! stored in the container's cache (`~/.cache/mitogen`, else
//! `/tmp/mitogen-UID`, else `/dev/shm/mitogen-UID`). A container where none
//! of them is writable and executable (a read-only root with no tmpfs) fails
//! with an error naming each directory tried and why.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::exec::Exec;
use crate::core::context::Context;
use crate::core::error::Result;
use crate::core::message::ContextId;
use crate::core::router::RouterInner;
use crate::parent::first_stage::Compression;

/// Which engine's client runs the container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Engine {
    /// `docker` (Docker Engine, or any client speaking its command line).
    Docker,
    /// `podman`.
    Podman,
}

impl Engine {
    /// The client's name, as the method's name in a target string.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Docker => "docker",
            Engine::Podman => "podman",
        }
    }
}

/// Options of a docker or podman context.
///
/// ```no_run
/// # fn demo(router: mitogen::Router) -> mitogen::Result<()> {
/// use mitogen::Docker;
/// // A running container, as user `app` (target string `docker:app@web`).
/// let web = router.start(None, Docker::exec("web").user("app"))?;
/// // A fresh container of an image, removed when the context ends
/// // (target string `docker-run:debian:12`).
/// let tmp = router.start(None, Docker::run("debian:12"))?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Docker {
    engine: Engine,
    container: Option<String>,
    image: Option<String>,
    user: Option<String>,
    client_path: Option<PathBuf>,
    args: Vec<String>,
    connect_timeout: Duration,
    upload: Compression,
    name: Option<String>,
    direct: bool,
}

impl Docker {
    fn new(engine: Engine, container: Option<String>, image: Option<String>) -> Docker {
        Docker {
            engine,
            container,
            image,
            user: None,
            client_path: None,
            args: Vec::new(),
            connect_timeout: super::exec::DEFAULT_CONNECT_TIMEOUT,
            // The engine is on this machine: gzip would only add its time.
            upload: Compression::Never,
            name: None,
            direct: true,
        }
    }

    /// Into the running docker container `container` (name or id):
    /// `docker exec -i CONTAINER`.
    pub fn exec(container: impl Into<String>) -> Docker {
        Docker::new(Engine::Docker, Some(container.into()), None)
    }

    /// A fresh container of `image`, removed when the context ends:
    /// `docker run --rm -i IMAGE`.
    pub fn run(image: impl Into<String>) -> Docker {
        Docker::new(Engine::Docker, None, Some(image.into()))
    }

    /// [`exec`](Self::exec) with podman.
    pub fn podman_exec(container: impl Into<String>) -> Docker {
        Docker::new(Engine::Podman, Some(container.into()), None)
    }

    /// [`run`](Self::run) with podman.
    pub fn podman_run(image: impl Into<String>) -> Docker {
        Docker::new(Engine::Podman, None, Some(image.into()))
    }

    /// The user (name or uid\[:gid\]) inside the container (`--user`;
    /// default the image's).
    pub fn user(mut self, user: impl Into<String>) -> Docker {
        self.user = Some(user.into());
        self
    }

    /// The client program (default `docker` or `podman` from `PATH`).
    pub fn client_path(mut self, path: impl Into<PathBuf>) -> Docker {
        self.client_path = Some(path.into());
        self
    }

    /// More options for `exec` or `run`, placed before the container or
    /// image (e.g. `["-w", "/srv"]`, `["--network", "none"]`).
    pub fn args<I, S>(mut self, args: I) -> Docker
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Time allowed for the client to start the program (default 30 s).
    pub fn connect_timeout(mut self, t: Duration) -> Docker {
        self.connect_timeout = t;
        self
    }

    /// Whether the upload may be gzip-compressed (default never: the engine
    /// is on this machine, where gzip only adds its own time; a client
    /// talking to a remote engine (`DOCKER_HOST`) may want
    /// [`Compression::Auto`]).
    pub fn upload_compression(mut self, c: Compression) -> Docker {
        self.upload = c;
        self
    }

    /// Whether the stream may leave the client's pipe for a direct socket
    /// to the process in the container (default on; `,direct=off` in a
    /// target string turns it off). Once the child has started through
    /// `docker exec -i`, a parent allowed to take a descriptor of it (root,
    /// or its owner where ptrace is allowed, on the kernel the container
    /// runs on) takes one end of a socketpair the child made, and the
    /// client's pipe stays only as the lifeline: calls then cost what a
    /// local context's do instead of a trip through the engine's daemon.
    /// Otherwise, silently, the stream stays on the pipe. See
    /// docs/containers.md, "Direct socket".
    pub fn direct(mut self, on: bool) -> Docker {
        self.direct = on;
        self
    }

    /// Names the context (default: the hop as a target string, such as
    /// `docker:app@web`).
    pub fn name(mut self, name: impl Into<String>) -> Docker {
        self.name = Some(name.into());
        self
    }

    pub(crate) fn name_ref(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.connect_timeout
    }

    pub(crate) fn default_name(&self) -> String {
        let (method, what) = match (&self.container, &self.image) {
            (Some(c), _) => (self.engine.as_str().to_owned(), c.as_str()),
            (None, Some(i)) => (format!("{}-run", self.engine.as_str()), i.as_str()),
            (None, None) => (self.engine.as_str().to_owned(), ""),
        };
        let hop = match &self.user {
            Some(u) => format!("{method}:{u}@{what}"),
            None => format!("{method}:{what}"),
        };
        if self.direct {
            hop
        } else {
            format!("{hop},direct=off")
        }
    }

    /// The client's command, without the stage.
    pub fn argv(&self) -> Vec<String> {
        let client = match &self.client_path {
            Some(p) => p.to_string_lossy().into_owned(),
            None => self.engine.as_str().to_owned(),
        };
        let mut v = vec![client];
        let user = |v: &mut Vec<String>| {
            if let Some(u) = &self.user {
                v.push(format!("--user={u}"));
            }
        };
        match (&self.container, &self.image) {
            (Some(c), _) => {
                v.extend(["exec".to_owned(), "--interactive".to_owned()]);
                user(&mut v);
                v.extend(self.args.iter().cloned());
                v.push("--".to_owned());
                v.push(c.clone());
            }
            (None, image) => {
                v.extend([
                    "run".to_owned(),
                    "--rm".to_owned(),
                    "--interactive".to_owned(),
                    // Never ask a registry: a missing image fails at once
                    // instead of a pull that may outlast the deadline.
                    "--pull=never".to_owned(),
                ]);
                user(&mut v);
                v.extend(self.args.iter().cloned());
                v.push("--".to_owned());
                v.push(image.clone().unwrap_or_default());
            }
        }
        v
    }

    /// The exec hop this runs.
    pub fn to_exec(&self) -> Exec {
        let mut e = Exec::new(self.argv())
            .connect_timeout(self.connect_timeout)
            .upload_compression(self.upload)
            .name(self.name.clone().unwrap_or_else(|| self.default_name()));
        // The engine runs on this machine (through its daemon), so the far
        // end is as near as a local process.
        e.local_peer = true;
        e.direct = self.direct;
        e
    }

    pub(crate) fn connect(
        self,
        router: &Arc<RouterInner>,
        id: Option<ContextId>,
    ) -> Result<Context> {
        self.to_exec().connect(router, id)
    }
}

impl From<Docker> for crate::methods::Method {
    fn from(m: Docker) -> crate::methods::Method {
        crate::methods::Method::Docker(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_of_each_form() {
        assert_eq!(
            Docker::exec("c1").argv(),
            ["docker", "exec", "--interactive", "--", "c1"]
        );
        assert_eq!(
            Docker::exec("c1")
                .user("app")
                .client_path("/opt/docker")
                .args(["-w", "/srv"])
                .argv(),
            [
                "/opt/docker",
                "exec",
                "--interactive",
                "--user=app",
                "-w",
                "/srv",
                "--",
                "c1"
            ]
        );
        assert_eq!(
            Docker::podman_run("img:1").user("1000").argv(),
            [
                "podman",
                "run",
                "--rm",
                "--interactive",
                "--pull=never",
                "--user=1000",
                "--",
                "img:1"
            ]
        );
        assert_eq!(
            Docker::exec("c1").user("app").default_name(),
            "docker:app@c1"
        );
        assert_eq!(Docker::podman_run("i:2").default_name(), "podman-run:i:2");
    }
}
