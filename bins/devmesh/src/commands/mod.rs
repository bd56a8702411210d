//! One function per command; each sends its control request(s) and prints
//! the answer (results on stdout, diagnostics on stderr).

pub mod cert;
pub mod connect;
pub mod daemon;
pub mod dashboard;
pub mod db;
pub mod docker;
pub mod graph;
pub mod inspect;
pub mod install;
pub mod join;
pub mod plugin;
pub mod project;
pub mod route;
pub mod run;
pub mod shell;
pub mod status;
pub mod up;
pub mod vscode;
