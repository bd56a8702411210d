//! The local certificate authority of a devmesh node and the certificates
//! of its HTTPS front door.
//!
//! `devmesh cert install` makes the CA once, in `<home>/ca/` ([`ca`]), and
//! says how to trust it ([`trust`]). The daemon's front door signs a leaf
//! certificate per server name on the fly ([`resolver`]), for `localhost`,
//! `*.localhost` and `*.devmesh` only; the CA's name constraints limit it to
//! those names too.
//!
//! ```no_run
//! # fn demo() -> Result<(), mesh_tls::Error> {
//! let paths = mesh_tls::Paths::in_home(std::path::Path::new("/home/me/.devmesh"));
//! let (ca, created) = mesh_tls::Ca::load_or_create(&paths)?;
//! println!("CA {} (new: {created})", ca.short_id());
//! let config = mesh_tls::server_config(mesh_tls::Resolver::new(paths))?;
//! # let _ = config; Ok(()) }
//! ```

pub mod ca;
mod error;
pub mod resolver;
pub mod trust;

pub use ca::{Ca, Paths};
pub use error::{CertError, ChainError, Error, StepError};
pub use resolver::{Resolver, allowed, server_config};

/// Whether `first_byte` of a connection starts a TLS handshake (a TLS
/// record of type handshake, 0x16); HTTP requests start with a letter.
pub fn is_tls_start(first_byte: u8) -> bool {
    first_byte == 0x16
}
