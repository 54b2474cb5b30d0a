//! Changing a running server's cameras: reloads (SIGHUP) and the REST API.
//!
//! Both end in [`Control::apply`], which compares the wanted cameras with
//! the running ones by id: a camera whose name and settings are unchanged
//! is left alone (its pipeline and viewers are not touched), a changed one
//! is reconfigured (its pipeline restarts, its viewers stay attached), a
//! removed one is shut down and an added one is started. The REST API
//! edits the config file first and then applies the file as a reload
//! would, so the running set of cameras always equals what a restart would
//! load.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::camera::{Camera, Configured};
use crate::config::{CameraConfig, CameraEntry, CameraId, Config, Defaults, Overrides};
use crate::config_edit::{self, EditError};
use crate::http::access::Security;
use crate::redact::{KnownSecrets, redact_text};
use crate::registry::Cameras;
use crate::tls::Tls;
use crate::upstream::{self, Lists, Upstream};

/// Why a change through the API was refused or failed. Messages are
/// redacted.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ManageError {
    /// The camera does not validate; the message is the one the config
    /// file would produce.
    #[error("{0}")]
    Invalid(String),
    #[error("a camera with id \"{0}\" already exists: PUT /api/cameras/{0} changes it")]
    Exists(CameraId),
    #[error("unknown camera \"{0}\": GET /api/cameras lists the cameras")]
    NotFound(CameraId),
    #[error(
        "camera \"{0}\" is the built-in demo, shown because the config file has no cameras: it goes away when a camera is added"
    )]
    Demo(CameraId),
    #[error(
        "camera \"{0}\" is relayed from an upstream camstream ([[upstreams]]): change it there"
    )]
    Relayed(CameraId),
    #[error(
        "camstream was started without a config file, so changes cannot be saved: start it with --config FILE"
    )]
    NoConfigFile,
    #[error("the config file has an error; fix it first: {0}")]
    FileInvalid(String),
    #[error("cannot save the config file {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// Why the config file could not be saved, and what to do instead when
/// camstream may not write there (the hardened compose file mounts it
/// read-only, on purpose).
fn why_not_written(e: &std::io::Error) -> String {
    let instead = "edit the file where it is mounted from and send camstream SIGHUP \
                   (docker kill -s HUP <container>) to apply it, or mount it writable \
                   to edit through the API";
    match e.kind() {
        std::io::ErrorKind::ReadOnlyFilesystem => {
            format!("it is on a read-only file system ({e}): {instead}")
        }
        std::io::ErrorKind::PermissionDenied => {
            format!("camstream may not write its directory ({e}): {instead}")
        }
        _ => e.to_string(),
    }
}

/// What a reload did, by camera id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    pub added: Vec<CameraId>,
    pub changed: Vec<CameraId>,
    pub removed: Vec<CameraId>,
    pub unchanged: usize,
}

/// The running cameras, the config file they came from, and the security
/// settings the HTTP layer reads on every request.
#[derive(Debug)]
pub struct Control {
    cameras: Arc<Cameras>,
    /// Parent of every camera's cancellation token.
    shutdown: CancellationToken,
    path: Option<PathBuf>,
    /// The command-line and environment settings the server started with:
    /// the file is always read with them.
    overrides: Overrides,
    /// One change at a time: a reload or an API edit reads the file,
    /// changes it and applies it as one step.
    lock: tokio::sync::Mutex<()>,
    security: RwLock<Arc<Security>>,
    /// The auth settings last applied, so their warnings are logged when
    /// they change rather than on every API edit.
    applied_auth: std::sync::Mutex<Option<Option<crate::auth::AuthConfig>>>,
    /// The HTTPS certificate, re-read by every apply (set once at start).
    tls: std::sync::OnceLock<Arc<Tls>>,
    /// The secrets of every configuration applied, for the log writer and
    /// the HTTP responses.
    secrets: KnownSecrets,
    /// The camera lists of the upstreams, as last read.
    lists: Arc<Lists>,
    /// The task reading each configured upstream's list.
    followers: std::sync::Mutex<Vec<(Arc<Upstream>, CancellationToken)>>,
    /// What the last configuration applied asks for, kept so that an
    /// upstream's changed list is applied beside it.
    applied: std::sync::Mutex<Option<Wanted>>,
}

/// The cameras a configuration asks for: its own, and its upstreams'.
#[derive(Debug)]
struct Wanted {
    cameras: Vec<CameraEntry>,
    upstreams: Vec<Arc<Upstream>>,
    defaults: Defaults,
    pipelines_dir: PathBuf,
}

impl Wanted {
    /// The configured cameras, then each upstream's, as last listed.
    fn entries(&self, lists: &Lists) -> Vec<CameraEntry> {
        let mut entries = self.cameras.clone();
        for upstream in &self.upstreams {
            for remote in lists.get(&upstream.name) {
                match CameraEntry::relay(upstream, &remote, &self.defaults, &self.pipelines_dir) {
                    Some(entry) => entries.push(entry),
                    None => warn!(
                        upstream = %upstream.name,
                        "camera {:?} is not served here: {}.{} is not a valid camera id (at most 64 characters)",
                        remote.id, upstream.name, remote.id
                    ),
                }
            }
        }
        entries
    }
}

impl Control {
    /// A control with no cameras yet; [`Control::apply`] starts them.
    /// `secrets` learns the secrets of each configuration applied.
    pub fn new(
        config: &Config,
        cameras: Arc<Cameras>,
        shutdown: CancellationToken,
        secrets: KnownSecrets,
    ) -> Control {
        let (security, _) = Security::new(&config.server);
        Control {
            cameras,
            shutdown,
            path: config.path.clone(),
            overrides: config.overrides.clone(),
            lock: tokio::sync::Mutex::new(()),
            security: RwLock::new(Arc::new(security)),
            applied_auth: std::sync::Mutex::new(None),
            secrets,
            tls: std::sync::OnceLock::new(),
            lists: Arc::default(),
            followers: std::sync::Mutex::default(),
            applied: std::sync::Mutex::default(),
        }
    }

    /// Applies the upstreams' camera lists as they change (cameras added
    /// or removed upstream appear or disappear here), until shutdown. The
    /// app runs it beside the server.
    pub async fn follow_upstreams(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = self.lists.changed() => {}
            }
            let _one_at_a_time = self.lock.lock().await;
            let entries = match &*self.applied.lock().unwrap_or_else(|e| e.into_inner()) {
                Some(wanted) => wanted.entries(&self.lists),
                None => continue,
            };
            let summary = self.apply_cameras(entries).await;
            if !(summary.added.is_empty() && summary.removed.is_empty()) {
                info!(
                    added = %summary.added.iter().map(CameraId::as_str).collect::<Vec<_>>().join(","),
                    removed = %summary.removed.iter().map(CameraId::as_str).collect::<Vec<_>>().join(","),
                    "upstream camera list changed"
                );
            }
        }
    }

    /// Runs one list reader per configured upstream: an unchanged upstream
    /// keeps its reader (and its list), a changed or removed one's reader
    /// stops.
    fn follow(&self, upstreams: &[Arc<Upstream>]) {
        let mut followers = self.followers.lock().unwrap_or_else(|e| e.into_inner());
        followers.retain(|(running, cancel)| {
            let keep = upstreams.iter().any(|u| u == running);
            if !keep {
                cancel.cancel();
                if !upstreams.iter().any(|u| u.name == running.name) {
                    self.lists.forget(&running.name);
                }
            }
            keep
        });
        for upstream in upstreams {
            if followers.iter().any(|(running, _)| running == upstream) {
                continue;
            }
            let cancel = self.shutdown.child_token();
            let span = tracing::info_span!("upstream", name = %upstream.name);
            tokio::spawn(tracing::Instrument::instrument(
                upstream::follow(
                    Arc::clone(upstream),
                    Arc::clone(&self.lists),
                    cancel.clone(),
                ),
                span,
            ));
            followers.push((Arc::clone(upstream), cancel));
        }
    }

    /// The server's TLS, so reloads re-read its certificate.
    pub fn set_tls(&self, tls: Arc<Tls>) {
        let _ = self.tls.set(tls);
    }

    /// The secrets of every configuration applied so far.
    pub fn secrets(&self) -> &KnownSecrets {
        &self.secrets
    }

    pub fn cameras(&self) -> &Arc<Cameras> {
        &self.cameras
    }

    /// The config file, if camstream was started with one.
    pub fn config_path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Authentication and CORS as currently configured.
    pub fn security(&self) -> Arc<Security> {
        Arc::clone(&self.security.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Makes the running server match `config` (see the module docs).
    /// `[server] listen`, `pipelines_dir`, `write_timeout_s` and `max_viewers` changes need a restart; auth and
    /// CORS apply to the next request.
    pub async fn apply(&self, config: Config) -> ReloadSummary {
        let _one_at_a_time = self.lock.lock().await;
        self.apply_locked(config).await
    }

    async fn apply_locked(&self, config: Config) -> ReloadSummary {
        // First, so that every line logged about this configuration is
        // masked with its secrets.
        self.secrets.learn(&config.redactor());
        let (security, warnings) = Security::new(&config.server);
        {
            let auth = Some(config.server.auth.clone());
            let mut applied = self.applied_auth.lock().unwrap_or_else(|e| e.into_inner());
            if *applied != auth {
                for warning in warnings {
                    warn!("{warning}");
                }
                *applied = auth;
            }
        }
        *self.security.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(security);
        if let Some(tls) = self.tls.get() {
            // New handshakes get the new certificate; open connections
            // keep theirs. A bad one is reported and the old one kept.
            match tls.reload(&config.server) {
                Ok(true) => tls.log("TLS certificate reloaded"),
                Ok(false) => {}
                Err(e) => warn!("TLS certificate not reloaded, keeping the one being served: {e}"),
            }
        }
        for problem in &config.problems {
            warn!("{problem}");
        }

        self.follow(&config.upstreams);
        let pipelines_dir = config.pipelines_dir();
        let wanted = Wanted {
            cameras: config.cameras,
            upstreams: config.upstreams,
            defaults: config.defaults,
            pipelines_dir,
        };
        let entries = wanted.entries(&self.lists);
        *self.applied.lock().unwrap_or_else(|e| e.into_inner()) = Some(wanted);
        self.apply_cameras(entries).await
    }

    /// Makes the running cameras these, diffed by id (see the module docs).
    async fn apply_cameras(&self, entries: Vec<CameraEntry>) -> ReloadSummary {
        let mut summary = ReloadSummary::default();
        let wanted: HashSet<CameraId> = entries.iter().map(|c| c.id.clone()).collect();
        // Removed cameras first, so their pipelines release devices and
        // sockets before added ones may need them.
        for camera in self.cameras.all() {
            if !wanted.contains(camera.id()) {
                self.cameras.remove(camera.id().as_str());
                camera.shutdown().await;
                info!(camera = %camera.id(), "camera removed");
                summary.removed.push(camera.id().clone());
            }
        }
        for entry in entries {
            let configured = Configured {
                name: entry.name,
                settings: entry.settings,
            };
            match self.cameras.get(entry.id.as_str()) {
                Some(camera) if *camera.configured() == configured => summary.unchanged += 1,
                Some(camera) => {
                    if let Err(reason) = &configured.settings {
                        warn!(camera = %entry.id, "{reason}");
                    }
                    camera.reconfigure(configured);
                    info!(camera = %entry.id, "camera changed: restarting it");
                    summary.changed.push(entry.id);
                }
                None => {
                    if let Err(reason) = &configured.settings {
                        warn!(camera = %entry.id, "{reason}");
                    }
                    let camera = Camera::spawn(
                        entry.id.clone(),
                        configured,
                        &self.shutdown,
                        self.secrets.clone(),
                    );
                    if let Err(duplicate) = self.cameras.insert(camera) {
                        // Config::parse already drops duplicate ids; stop
                        // the extra supervisor all the same.
                        duplicate.shutdown().await;
                    } else {
                        summary.added.push(entry.id);
                    }
                }
            }
        }
        summary
    }

    /// Adds a camera: validated like a `[[cameras]]` entry, saved to the
    /// config file, then started.
    pub async fn create(&self, camera: CameraConfig) -> Result<Arc<Camera>, ManageError> {
        let id = camera.id.clone();
        self.edit(&camera, |text| config_edit::add_camera(text, &camera))
            .await?;
        self.cameras
            .get(id.as_str())
            .ok_or(ManageError::NotFound(id))
    }

    /// Replaces a camera's entry. Its viewers stay attached while its
    /// pipeline restarts.
    pub async fn update(&self, camera: CameraConfig) -> Result<Arc<Camera>, ManageError> {
        let id = camera.id.clone();
        self.edit(&camera, |text| config_edit::replace_camera(text, &camera))
            .await?;
        self.cameras
            .get(id.as_str())
            .ok_or(ManageError::NotFound(id))
    }

    /// Removes a camera from the file and stops it; its viewers' streams
    /// end.
    pub async fn delete(&self, id: &CameraId) -> Result<(), ManageError> {
        let _one_at_a_time = self.lock.lock().await;
        let (path, text, _) = self.read_file().await?;
        let new_text = config_edit::remove_camera(&text, id).map_err(|e| self.edit_error(e))?;
        self.save_and_apply(&path, new_text).await
    }

    /// Validates `camera` against the file's current `[defaults]`, edits the
    /// file with `change`, saves it and applies it.
    async fn edit(
        &self,
        camera: &CameraConfig,
        change: impl FnOnce(&str) -> Result<String, EditError>,
    ) -> Result<(), ManageError> {
        let _one_at_a_time = self.lock.lock().await;
        let (path, text, current) = self.read_file().await?;
        camera
            .resolve(&current.defaults, &current.pipelines_dir())
            .map_err(ManageError::Invalid)?;
        let new_text = change(&text).map_err(|e| self.edit_error(e))?;
        self.save_and_apply(&path, new_text).await
    }

    fn edit_error(&self, error: EditError) -> ManageError {
        match error {
            EditError::Exists(id) => ManageError::Exists(id),
            EditError::NotFound(id) => match self.cameras.get(id.as_str()) {
                Some(camera)
                    if camera
                        .configured()
                        .settings
                        .as_ref()
                        .is_ok_and(|s| s.relay.is_some()) =>
                {
                    ManageError::Relayed(id)
                }
                Some(_) => ManageError::Demo(id),
                None => ManageError::NotFound(id),
            },
            other => ManageError::FileInvalid(other.to_string()),
        }
    }

    /// The config file as it is now on disk: its path, text and parse.
    async fn read_file(&self) -> Result<(PathBuf, String, Config), ManageError> {
        let path = self.path.clone().ok_or(ManageError::NoConfigFile)?;
        let text = tokio::fs::read_to_string(&path)
            .await
            .map_err(|e| ManageError::FileInvalid(format!("{}: {e}", path.display())))?;
        let config = Config::parse_with(&text, Some(&path), &self.overrides)
            .map_err(|e| ManageError::FileInvalid(e.to_string()))?;
        Ok((path, text, config))
    }

    async fn save_and_apply(&self, path: &Path, text: String) -> Result<(), ManageError> {
        // Parse what is about to be written: an edit must never save a file
        // camstream itself could not start from.
        let config = Config::parse_with(&text, Some(path), &self.overrides)
            .map_err(|e| ManageError::FileInvalid(e.to_string()))?;
        let write_path = path.to_path_buf();
        tokio::task::spawn_blocking(move || config_edit::write_atomically(&write_path, &text))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| why_not_written(&e)))
            .map_err(|reason| ManageError::Write {
                path: path.to_path_buf(),
                reason: redact_text(&reason).into_owned(),
            })?;
        let summary = self.apply_locked(config.with_demo_if_empty()).await;
        info!(
            added = %summary.added.iter().map(CameraId::as_str).collect::<Vec<_>>().join(","),
            changed = %summary.changed.iter().map(CameraId::as_str).collect::<Vec<_>>().join(","),
            removed = %summary.removed.iter().map(CameraId::as_str).collect::<Vec<_>>().join(","),
            "config file {} updated through the API", path.display()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::why_not_written;

    #[test]
    fn a_read_only_config_says_how_to_change_it_instead() {
        for kind in [
            std::io::ErrorKind::ReadOnlyFilesystem,
            std::io::ErrorKind::PermissionDenied,
        ] {
            let why = why_not_written(&std::io::Error::from(kind));
            assert!(why.contains("SIGHUP"), "{why}");
            assert!(why.contains("mount it writable"), "{why}");
        }
        let other = why_not_written(&std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert!(!other.contains("SIGHUP"), "{other}");
    }
}
