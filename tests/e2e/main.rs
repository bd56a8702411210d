//! End-to-end tests: real `devmeshd` and `devmesh` processes on loopback,
//! real HTTP and WebSocket backends.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod cli;
mod compose;
mod dashboard;
mod docker;
mod editor;
mod faults;
mod health;
mod home;
mod hostile;
mod http;
mod http2;
mod https;
mod inspect;
mod install;
mod large;
mod lifecycle;
mod limits;
mod malformed;
mod mdns;
mod mesh;
mod metrics;
mod namespace;
mod natlab;
mod natlab_faults;
mod natlab_kinds;
mod plugin;
mod reqlog;
mod routing;
mod tcp;
mod traces;
pub(crate) mod up;
mod websocket;
