//! camstream: cameras to browsers as MJPEG, one GStreamer pipeline per
//! camera, encoded once and fanned out to every viewer.
//!
//! How a frame travels, and which module owns each step, is described in
//! docs/architecture.md.

pub mod app;
pub mod auth;
pub mod camera;
pub mod cmds;
pub mod config;
pub mod config_edit;
pub mod control;
pub mod frames;
pub mod http;
pub mod jpeg;
pub mod logging;
pub mod outputs;
pub mod pipeline;
pub mod redact;
pub mod registry;
pub mod source;
pub mod tls;
pub mod upstream;

pub use app::App;
pub use config::Config;
