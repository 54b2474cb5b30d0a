//! `GET /metrics`: Prometheus text exposition format 0.0.4.
//!
//! Per camera (label `camera="ID"`): frames from the source, bytes sent,
//! pipeline starts and restarts, measured fps and the state as a one-hot
//! gauge. Per size of a camera (labels `camera`, `size`): viewers, frames
//! let in, encoded and dropped, bytes encoded and the encode-time
//! histogram. Then the process: resident memory, CPU seconds, open file
//! descriptors, threads, read from /proc/self. Every value is read from atomics or watch
//! channels; serving metrics never waits on a camera.
//!
//! The format is written directly: it is a few lines of text, and the
//! output is checked by Prometheus' own `promtool check metrics` in the
//! tests.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use warp::Reply;
use warp::http::{HeaderValue, header};

use super::AppState;
use crate::camera::State;
use crate::outputs::Output;

/// What Prometheus expects for the text format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const STATES: [State; 6] = [
    State::Idle,
    State::Starting,
    State::Streaming,
    State::Reconnecting,
    State::Failed,
    State::Stopped,
];

/// Builds the exposition text.
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Label values escape backslash, quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A float as Prometheus writes it.
fn float(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// A camera's outputs, each with its size name as shown (masked).
type NamedOutputs = Vec<(String, Arc<Output>)>;

pub fn render(state: &AppState) -> warp::reply::Response {
    let cameras = state.cameras.all();
    let mut e = Exposition {
        out: String::with_capacity(4096 + cameras.len() * 3072),
    };
    // The only label values that come from the config: masked like
    // everything else camstream says (ids are checked to be plain words,
    // but a check is not a mask), once per camera rather than per sample.
    let redactor = state.control.secrets().redactor();
    let ids: Vec<String> = cameras
        .iter()
        .map(|c| redactor.redact(c.id().as_str()))
        .collect();

    e.family(
        "camstream_build_info",
        "gauge",
        "The camstream version, as a label.",
    );
    e.sample(
        "camstream_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    e.family("camstream_cameras", "gauge", "Cameras configured.");
    e.sample("camstream_cameras", &[], cameras.len());

    // The front door (server.rs) and the access check (access.rs).
    let connections = &state.connections;
    e.family(
        "camstream_connections_open",
        "gauge",
        "HTTP connections open now.",
    );
    e.sample("camstream_connections_open", &[], connections.open());
    e.family(
        "camstream_connections_refused_total",
        "counter",
        "Connections closed at accept: over [server] max_connections (limit=\"total\") or max_connections_per_client (limit=\"per_client\").",
    );
    let (total, per_client) = connections.refused();
    e.sample(
        "camstream_connections_refused_total",
        &[("limit", "total")],
        total,
    );
    e.sample(
        "camstream_connections_refused_total",
        &[("limit", "per_client")],
        per_client,
    );
    e.family(
        "camstream_connections_timed_out_total",
        "counter",
        "Connections closed for sending no request head in time, or carrying nothing for the idle timeout.",
    );
    e.sample(
        "camstream_connections_timed_out_total",
        &[],
        connections.timed_out(),
    );
    e.family(
        "camstream_tls_handshakes_total",
        "counter",
        "TLS handshakes completed, by the protocol ALPN chose (h2 or http/1.1).",
    );
    let (h2, http11, failed) = connections.tls_handshakes();
    e.sample("camstream_tls_handshakes_total", &[("protocol", "h2")], h2);
    e.sample(
        "camstream_tls_handshakes_total",
        &[("protocol", "http/1.1")],
        http11,
    );
    e.family(
        "camstream_tls_handshake_failures_total",
        "counter",
        "TLS handshakes that failed or did not finish within the header timeout.",
    );
    e.sample("camstream_tls_handshake_failures_total", &[], failed);
    e.family(
        "camstream_http2_streams_stalled_total",
        "counter",
        "HTTP/2 streams reset because their client read nothing for write_timeout_s.",
    );
    e.sample(
        "camstream_http2_streams_stalled_total",
        &[],
        connections.h2_streams_stalled(),
    );
    e.family(
        "camstream_failed_login_refusals_total",
        "counter",
        "Requests refused with 429 because their address sent too many wrong credentials.",
    );
    e.sample(
        "camstream_failed_login_refusals_total",
        &[],
        state.gate.logins.refused(),
    );

    // One pass per family, as the format wants every sample of a family
    // together.
    type Counter = fn(&crate::camera::Camera) -> u64;
    let counters: [(&str, &str, &str, Counter); 4] = [
        (
            "camstream_source_frames_total",
            "counter",
            "Frames from the source that reached camstream (after max_fps), whether or not a size needed them.",
            |c| c.stats().source_frames.load(Ordering::Relaxed),
        ),
        (
            "camstream_bytes_sent_total",
            "counter",
            "Bytes written to viewers: streams, snapshots and the grid WebSocket.",
            |c| c.stats().bytes_sent.load(Ordering::Relaxed),
        ),
        (
            "camstream_pipeline_starts_total",
            "counter",
            "Pipelines built (first start, restarts and reconfigurations).",
            |c| c.starts().0,
        ),
        (
            "camstream_restarts_total",
            "counter",
            "Pipelines rebuilt after a failure, stall or end of stream.",
            |c| c.starts().1,
        ),
    ];
    for (name, kind, help, read) in counters {
        e.family(name, kind, help);
        for (camera, id) in cameras.iter().zip(&ids) {
            e.sample(name, &[("camera", id)], read(camera));
        }
    }

    e.family(
        "camstream_fps",
        "gauge",
        "Frames per second from the source, measured over the last second.",
    );
    for (camera, id) in cameras.iter().zip(&ids) {
        e.sample(
            "camstream_fps",
            &[("camera", id)],
            float(camera.status().fps),
        );
    }

    e.family(
        "camstream_camera_state",
        "gauge",
        "1 for the camera's current state, 0 for the others.",
    );
    for (camera, id) in cameras.iter().zip(&ids) {
        let current = camera.status().state;
        for s in STATES {
            e.sample(
                "camstream_camera_state",
                &[("camera", id), ("state", s.as_str())],
                u8::from(s == current),
            );
        }
    }

    // Per size: each camera's outputs, read once for every family.
    let sizes: Vec<(&str, NamedOutputs)> = cameras
        .iter()
        .zip(&ids)
        .map(|(camera, id)| {
            let outputs = camera
                .outputs()
                .iter()
                .map(|o| (redactor.redact(o.name()), Arc::clone(o)))
                .collect();
            (id.as_str(), outputs)
        })
        .collect();
    type SizeCounter = fn(&Output) -> u64;
    let per_size: [(&str, &str, &str, SizeCounter); 5] = [
        (
            "camstream_viewers",
            "gauge",
            "Viewers attached now (streams, snapshots in progress, grid tiles), by size.",
            |o| o.viewers() as u64,
        ),
        (
            "camstream_frames_in_total",
            "counter",
            "Frames let into the size's branch (none while nobody watches it).",
            |o| o.stats().frames_in.load(Ordering::Relaxed),
        ),
        (
            "camstream_frames_encoded_total",
            "counter",
            "Frames of the size JPEG-encoded (or passed through) and published, once for all its viewers.",
            |o| o.stats().frames_out.load(Ordering::Relaxed),
        ),
        (
            "camstream_frames_dropped_total",
            "counter",
            "Frames of the size discarded before encoding because encoding fell behind the source.",
            |o| o.stats().frames_dropped(),
        ),
        (
            "camstream_bytes_encoded_total",
            "counter",
            "JPEG bytes the size's branch produced.",
            |o| o.stats().bytes_out.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, read) in per_size {
        e.family(name, kind, help);
        for (id, outputs) in &sizes {
            for (size, output) in outputs {
                e.sample(name, &[("camera", id), ("size", size)], read(output));
            }
        }
    }

    e.family(
        "camstream_encode_seconds",
        "histogram",
        "Time jpegenc took per frame, by size.",
    );
    for (id, outputs) in &sizes {
        for (size, output) in outputs {
            let h = output.stats().encode_time.snapshot();
            let bucket = |e: &mut Exposition, le: &str, count: u64| {
                e.sample(
                    "camstream_encode_seconds_bucket",
                    &[("camera", id), ("size", size), ("le", le)],
                    count,
                );
            };
            for (le, count) in &h.cumulative {
                bucket(&mut e, &float(*le), *count);
            }
            bucket(&mut e, "+Inf", h.count);
            let labels = [("camera", *id), ("size", size.as_str())];
            e.sample(
                "camstream_encode_seconds_sum",
                &labels,
                float(h.sum_seconds),
            );
            e.sample("camstream_encode_seconds_count", &labels, h.count);
        }
    }

    process(&mut e);

    let mut response = warp::reply::Response::new(e.out.into());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    super::mjpeg::no_cache(headers);
    response.into_response()
}

/// Process figures under the names every Prometheus client library uses.
/// A figure /proc does not give is left out rather than made up.
fn process(e: &mut Exposition) {
    let Some(stat) = ProcStat::read() else {
        return;
    };
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    e.family(
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time spent, in seconds.",
    );
    e.sample(
        "process_cpu_seconds_total",
        &[],
        float((stat.utime + stat.stime) as f64 / ticks),
    );
    e.family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
    );
    e.sample(
        "process_resident_memory_bytes",
        &[],
        stat.rss_pages * rustix::param::page_size() as u64,
    );
    e.family(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
    );
    e.sample("process_virtual_memory_bytes", &[], stat.vsize);
    e.family("process_threads", "gauge", "OS threads in the process.");
    e.sample("process_threads", &[], stat.threads);
    if let Some(boot) = boot_time() {
        e.family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, in seconds.",
        );
        e.sample(
            "process_start_time_seconds",
            &[],
            float(boot as f64 + stat.start_ticks as f64 / ticks),
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        e.family(
            "process_open_fds",
            "gauge",
            "Open file descriptors (sockets, devices, files).",
        );
        e.sample("process_open_fds", &[], fds.count());
    }
    if let Some(max) = max_fds() {
        e.family(
            "process_max_fds",
            "gauge",
            "The soft limit on open file descriptors.",
        );
        e.sample("process_max_fds", &[], max);
    }
}

/// The fields of /proc/self/stat used here (proc(5)).
struct ProcStat {
    utime: u64,
    stime: u64,
    threads: u64,
    start_ticks: u64,
    vsize: u64,
    rss_pages: u64,
}

impl ProcStat {
    fn read() -> Option<ProcStat> {
        let text = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) is in parentheses and may contain
        // spaces; the numbered fields start after its closing parenthesis.
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `fields[0]` is field 3 (state).
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(ProcStat {
            utime: field(14)?,
            stime: field(15)?,
            threads: field(20)?,
            start_ticks: field(22)?,
            vsize: field(23)?,
            rss_pages: field(24)?,
        })
    }
}

fn boot_time() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn max_fds() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_parses() {
        let stat = ProcStat::read().expect("/proc/self/stat");
        assert!(stat.threads >= 1 && stat.rss_pages > 0 && stat.vsize > 0);
        assert!(max_fds().is_some_and(|m| m > 0));
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(0.5), "0.5");
    }
}
