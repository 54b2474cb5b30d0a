//! Shared integration-test harness. Every test binary pulls this in with
//! `mod common;`, so helpers unused by one binary must not warn there.
#![allow(dead_code)]

pub mod app;
pub mod browser;
pub mod fakehw;
pub mod http;
pub mod logs;
pub mod mjpeg;
pub mod nginx;
pub mod proxy;
pub mod raw;
pub mod rtsp;
pub mod tls;

use std::sync::Once;

/// Initialise GStreamer exactly once per test process. Safe to call from every
/// test (tests run on many threads); it installs no logger or other global
/// state so tests stay free to choose their own.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| gstreamer::init().expect("gstreamer::init failed"));
}

/// A loopback port free a moment ago (bound, read, let go), for a server
/// the test starts on a port it must know first.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
