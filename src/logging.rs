//! Log output: human-readable text or one JSON object per line, filtered
//! like `RUST_LOG` (default `info`). Every line logged by a camera's
//! supervisor carries its `camera{id=...}` span, as a prefix in text and
//! as `span`/`spans` fields in JSON.
//!
//! Every line passes through the redactor on its way out ([`Redacting`]),
//! whoever logged it and whatever it holds, so a call site cannot forget.
//! So do GStreamer's own debug log (`GST_DEBUG`) and GLib's warnings
//! ([`mask_gstreamer_output`]), which would otherwise go to stderr as they
//! are: at `GST_DEBUG=GST_BUS:5` the bus messages of an HTTP camera carry
//! its request headers, `Authorization: Basic` and all.

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::redact::KnownSecrets;

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people reading a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global subscriber. Call once, at start. The server logs
/// what it does at `info` on stdout; the one-shot commands print their own
/// report on stdout, so they log only warnings, to stderr. `RUST_LOG`
/// overrides the level either way. Lines are masked with the redactor's
/// rules and whatever `secrets` holds when they are written.
pub fn init(format: LogFormat, serving: bool, secrets: KnownSecrets) {
    let _ = PROCESS_SECRETS.set(secrets.clone());
    let default = if serving { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only for a terminal: escape codes garble log files.
    let terminal = if serving {
        std::io::stdout().is_terminal()
    } else {
        std::io::stderr().is_terminal()
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal);
    let json = format == LogFormat::Json;
    match (json, serving) {
        (false, true) => builder
            .with_writer(Redacting::new(std::io::stdout, secrets, format))
            .init(),
        (true, true) => builder
            .json()
            .with_writer(Redacting::new(std::io::stdout, secrets, format))
            .init(),
        (false, false) => builder
            .with_writer(Redacting::new(std::io::stderr, secrets, format))
            .init(),
        (true, false) => builder
            .json()
            .with_writer(Redacting::new(std::io::stderr, secrets, format))
            .init(),
    }
}

/// The secrets the process's log writer masks, for GStreamer's and GLib's
/// output too: set by [`init`] (a library user that never calls it keeps
/// GStreamer's own output as it is).
static PROCESS_SECRETS: OnceLock<KnownSecrets> = OnceLock::new();

/// Sends GStreamer's debug log and GLib's log messages through the
/// redactor: the same lines, on stderr (or in `GST_DEBUG_FILE`), masked.
/// Which lines is unchanged: `GST_DEBUG` picks GStreamer's, and GLib's
/// debug and info messages need `G_MESSAGES_DEBUG`, as before. Called once
/// GStreamer is initialised (`pipeline::init`), since initialising it
/// installs the default log function this one replaces.
pub fn mask_gstreamer_output() {
    use gstreamer as gst;
    use gstreamer::glib;

    let Some(secrets) = PROCESS_SECRETS.get().cloned() else {
        return;
    };
    static DONE: OnceLock<()> = OnceLock::new();
    if DONE.set(()).is_err() {
        return;
    }
    let start = Instant::now();
    let out: Mutex<Box<dyn Write + Send>> = Mutex::new(
        match std::env::var_os("GST_DEBUG_FILE")
            .filter(|f| !f.is_empty())
            .map(std::fs::File::create)
        {
            Some(Ok(file)) => Box::new(std::io::LineWriter::new(file)),
            _ => Box::new(std::io::stderr()),
        },
    );
    let pid = std::process::id();
    let masked = secrets.clone();
    gst::log::remove_default_log_function();
    gst::log::add_log_function(
        move |category, level, file, function, line, object, message| {
            let elapsed = start.elapsed();
            let text = message.get().map(|m| m.to_string()).unwrap_or_default();
            let object = object.map(|o| format!("<{o}>")).unwrap_or_default();
            let line = format!(
                "{}:{:02}:{:02}.{:09} {pid} {:?} {:<7} {:>20} {file}:{line}:{function}:{object} {text}\n",
                elapsed.as_secs() / 3600,
                elapsed.as_secs() / 60 % 60,
                elapsed.as_secs() % 60,
                elapsed.subsec_nanos(),
                std::thread::current().id(),
                level.name(),
                category.name(),
            );
            let line = masked.redact(&line);
            let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
            // Nowhere to report a failed log write.
            let _ = out.write_all(line.as_bytes());
        },
    );
    let wanted = std::env::var("G_MESSAGES_DEBUG").unwrap_or_default();
    glib::log_set_default_handler(move |domain, level, message| {
        let (name, chatty) = match level {
            glib::LogLevel::Error => ("ERROR", false),
            glib::LogLevel::Critical => ("CRITICAL", false),
            glib::LogLevel::Warning => ("WARNING", false),
            glib::LogLevel::Message => ("Message", false),
            glib::LogLevel::Info => ("INFO", true),
            glib::LogLevel::Debug => ("DEBUG", true),
        };
        let domain = domain.unwrap_or("");
        if chatty
            && !wanted
                .split([' ', ','])
                .any(|d| d == "all" || (!d.is_empty() && d == domain))
        {
            return;
        }
        let line = format!("\n(camstream:{pid}): {domain}-{name} **: {message}\n");
        let _ = std::io::stderr().write_all(secrets.redact(&line).as_bytes());
    });
}

/// A [`MakeWriter`] that masks secrets in every line before it reaches the
/// inner writer. The fmt layer formats an event completely and then writes
/// it through one writer, which this one buffers and masks as a whole when
/// the layer drops it: a secret is never split across two writes.
#[derive(Clone, Debug)]
pub struct Redacting<M> {
    inner: M,
    secrets: KnownSecrets,
    format: LogFormat,
}

impl<M> Redacting<M> {
    /// `format` must be the one the lines are formatted in: a JSON line is
    /// masked string by string, so it stays valid JSON.
    pub fn new(inner: M, secrets: KnownSecrets, format: LogFormat) -> Self {
        Redacting {
            inner,
            secrets,
            format,
        }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        self.wrap(self.inner.make_writer())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        self.wrap(self.inner.make_writer_for(meta))
    }
}

impl<M> Redacting<M> {
    fn wrap<W: Write>(&self, inner: W) -> RedactingWriter<W> {
        RedactingWriter {
            inner,
            buffer: Vec::new(),
            secrets: self.secrets.clone(),
            format: self.format,
        }
    }
}

/// One event's output, held until it is complete.
pub struct RedactingWriter<W: Write> {
    inner: W,
    buffer: Vec<u8>,
    secrets: KnownSecrets,
    format: LogFormat,
}

impl<W: Write> RedactingWriter<W> {
    fn emit(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.buffer);
        let redactor = self.secrets.redactor();
        let mut out = String::with_capacity(text.len());
        for line in text.split_inclusive('\n') {
            let (body, newline) = match line.strip_suffix('\n') {
                Some(body) => (body, "\n"),
                None => (line, ""),
            };
            match self.format {
                LogFormat::Json => out.push_str(&redactor.redact_json(body)),
                LogFormat::Text => out.push_str(&redactor.redact(body)),
            }
            out.push_str(newline);
        }
        self.buffer.clear();
        self.inner.write_all(out.as_bytes())
    }
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.emit()?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        // Nowhere to report a failed log write.
        let _ = self.emit();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;
    use crate::redact::Redactor;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(format: LogFormat, secrets: &KnownSecrets, event: impl FnOnce()) -> String {
        let sink = Sink::default();
        let writer = {
            let sink = sink.clone();
            Redacting::new(move || sink.clone(), secrets.clone(), format)
        };
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG);
        match format {
            LogFormat::Text => {
                tracing::subscriber::with_default(builder.with_writer(writer).finish(), event)
            }
            LogFormat::Json => tracing::subscriber::with_default(
                builder.json().with_writer(writer).finish(),
                event,
            ),
        }
        String::from_utf8(sink.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn lines_are_masked_as_they_are_written() {
        let secrets = KnownSecrets::default();
        let event = || {
            tracing::info!(
                source = "http://cam/v.cgi?user=admin&pwd=Qz1pwd",
                "opening rtsp://admin:Qz2url@cam/x with user-pw = \"Qz3 prop\" and hunter22"
            );
            tracing::debug!(header = ?"Authorization: Basic Qz4aGVsbG8=", "request");
        };
        for format in [LogFormat::Text, LogFormat::Json] {
            let out = logged(format, &secrets, event);
            for secret in ["Qz1", "Qz2", "Qz3", "Qz4"] {
                assert!(!out.contains(secret), "{format:?}: {out}");
            }
            // Not known yet: only the rules apply.
            assert!(out.contains("hunter22"), "{out}");
        }
        // The app learns a secret after the subscriber is set up.
        secrets.learn(&Redactor::new(["hunter22"]));
        for format in [LogFormat::Text, LogFormat::Json] {
            let out = logged(format, &secrets, event);
            assert!(!out.contains("hunter22"), "{format:?}: {out}");
            if format == LogFormat::Json {
                for line in out.lines() {
                    let value: serde_json::Value = serde_json::from_str(line).expect("JSON");
                    assert!(value["fields"].is_object(), "{line}");
                }
            }
        }
    }

    #[test]
    fn a_writer_used_twice_is_masked_per_event() {
        let secrets = KnownSecrets::default();
        let make = Redacting::new(Sink::default, secrets, LogFormat::Text);
        let mut writer = make.make_writer();
        // A secret split across two writes is still masked.
        writer.write_all(b"rtsp://u:Qz").unwrap();
        writer.write_all(b"9secret@h/x\n").unwrap();
        let sink = writer.inner.clone();
        drop(writer);
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out, "rtsp://u:***@h/x\n");
    }
}
