//! What a program holds: the public [`Router`], its builder and the options of
//! [`Router::connect_with`], and the table of hops that `connect` shares.
//!
//! The name keeps it apart from `core::router`: that one is the message bus
//! every context runs (`RouterInner`, the seed's `mitogen.core.Router`); this
//! one is the handle a program starts contexts with (the seed's
//! `mitogen.parent.Router`), a thin layer on top of it.

pub(crate) mod builder;
pub(crate) mod connect_options;
pub(crate) mod router;
pub(crate) mod shared_hops;

pub use builder::RouterBuilder;
pub use connect_options::{ConnectOptions, IntoTarget};
pub use router::Router;
