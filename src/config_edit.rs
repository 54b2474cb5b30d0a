//! Editing the config file on behalf of the REST API, and writing it
//! safely.
//!
//! Edits go through `toml_edit`, which keeps everything it is not asked to
//! change byte for byte: comments, blank lines, key order, the other
//! cameras. A replaced camera keeps its position, the comments above its
//! `[[cameras]]` line and above each key, and the formatting of every value
//! that did not change. A removed camera takes the comments above it along.
//!
//! Writes are atomic: the new text goes to a temporary file in the same
//! directory, is fsynced, renamed over the old file (an atomic replace on
//! POSIX file systems), and the directory is fsynced so the rename itself
//! survives a power cut. A crash at any point leaves either the old file or
//! the new one, never a mix.

use std::io::Write;
use std::path::{Path, PathBuf};

use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, TableLike, Value};

use crate::config::{CameraConfig, CameraId};
use crate::redact::redact_text;

/// Why the file could not be edited.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("the config file is not valid TOML: {0}")]
    Parse(String),
    #[error(
        "the config file's `cameras` is neither [[cameras]] tables nor an array of tables: fix it by hand"
    )]
    Shape,
    #[error("camera \"{0}\" is not in the config file")]
    NotFound(CameraId),
    #[error("a camera with id \"{0}\" already exists: PUT /api/cameras/{0} changes it")]
    Exists(CameraId),
    #[error("cannot write the camera as TOML: {0}")]
    Serialize(String),
}

/// `text` with `camera` appended as a new `[[cameras]]` entry.
pub fn add_camera(text: &str, camera: &CameraConfig) -> Result<String, EditError> {
    let mut doc = parse(text)?;
    if find(&doc, &camera.id)?.is_some() {
        return Err(EditError::Exists(camera.id.clone()));
    }
    let mut table = camera_table(camera)?;
    match doc.get_mut("cameras") {
        None => {
            // A blank line before the first [[cameras]] header, as in the
            // example file.
            table.decor_mut().set_prefix("\n");
            let mut cameras = ArrayOfTables::new();
            cameras.push(table);
            doc.insert("cameras", Item::ArrayOfTables(cameras));
        }
        Some(Item::ArrayOfTables(cameras)) => {
            table.decor_mut().set_prefix("\n");
            cameras.push(table);
        }
        Some(Item::Value(Value::Array(cameras))) => {
            cameras.push(table.into_inline_table());
        }
        Some(_) => return Err(EditError::Shape),
    }
    Ok(doc.to_string())
}

/// `text` with the entry for `camera.id` replaced by `camera`.
pub fn replace_camera(text: &str, camera: &CameraConfig) -> Result<String, EditError> {
    let mut doc = parse(text)?;
    let index = find(&doc, &camera.id)?.ok_or_else(|| EditError::NotFound(camera.id.clone()))?;
    let new = camera_table(camera)?;
    match doc.get_mut("cameras") {
        Some(Item::ArrayOfTables(cameras)) => {
            let old = cameras.get_mut(index).ok_or(EditError::Shape)?;
            merge(old, &new);
        }
        Some(Item::Value(Value::Array(cameras))) => {
            let old = cameras
                .get_mut(index)
                .and_then(Value::as_inline_table_mut)
                .ok_or(EditError::Shape)?;
            merge(old, &new);
        }
        _ => return Err(EditError::Shape),
    }
    Ok(doc.to_string())
}

/// `text` without the entry for `id`.
pub fn remove_camera(text: &str, id: &CameraId) -> Result<String, EditError> {
    let mut doc = parse(text)?;
    let index = find(&doc, id)?.ok_or_else(|| EditError::NotFound(id.clone()))?;
    match doc.get_mut("cameras") {
        Some(Item::ArrayOfTables(cameras)) => {
            cameras.remove(index);
        }
        Some(Item::Value(Value::Array(cameras))) => {
            cameras.remove(index);
        }
        _ => return Err(EditError::Shape),
    }
    Ok(doc.to_string())
}

fn parse(text: &str) -> Result<DocumentMut, EditError> {
    text.parse::<DocumentMut>()
        .map_err(|e| EditError::Parse(redact_text(e.message()).into_owned()))
}

/// The index of the entry whose `id` is `id` (`id = 1` and `id = "1"` are
/// the same camera).
fn find(doc: &DocumentMut, id: &CameraId) -> Result<Option<usize>, EditError> {
    let matches = |table: &dyn TableLike| {
        table
            .get("id")
            .and_then(Item::as_value)
            .is_some_and(|v| match v {
                Value::String(s) => s.value() == id.as_str(),
                Value::Integer(i) => i.value().to_string() == id.as_str(),
                _ => false,
            })
    };
    match doc.get("cameras") {
        None => Ok(None),
        Some(Item::ArrayOfTables(cameras)) => Ok(cameras.iter().position(|t| matches(t))),
        Some(Item::Value(Value::Array(cameras))) => Ok(cameras
            .iter()
            .position(|v| v.as_inline_table().is_some_and(|t| matches(t)))),
        Some(_) => Err(EditError::Shape),
    }
}

/// The camera as a TOML table, keys in `CameraConfig` order.
fn camera_table(camera: &CameraConfig) -> Result<Table, EditError> {
    let text = toml::to_string(camera).map_err(|e| EditError::Serialize(e.to_string()))?;
    let doc = parse(&text)?;
    Ok(doc.as_table().clone())
}

/// Makes `old` hold exactly the keys and values of `new`, touching only
/// what differs: a key whose value is unchanged keeps its formatting and
/// comments; a changed value keeps the comment after it.
fn merge(old: &mut dyn TableLike, new: &Table) {
    let stale: Vec<String> = old
        .iter()
        .map(|(k, _)| k.to_string())
        .filter(|k| !new.contains_key(k))
        .collect();
    for key in stale {
        old.remove(&key);
    }
    for (key, item) in new.iter() {
        let Some(value) = item.as_value() else {
            continue;
        };
        match old.get_mut(key) {
            // The id is what found this entry: `1` and `"1"` are equal.
            Some(_) if key == "id" => {}
            Some(Item::Value(existing)) => {
                if bare(existing) != bare(value) {
                    let decor = existing.decor().clone();
                    *existing = value.clone();
                    *existing.decor_mut() = decor;
                }
            }
            Some(other) => *other = item.clone(),
            None => {
                old.insert(key, item.clone());
            }
        }
    }
}

/// A value's text without its surrounding whitespace and comments.
fn bare(value: &Value) -> String {
    value.clone().decorated("", "").to_string()
}

/// Writes `text` to `path` atomically (see the module docs). A symlinked
/// config file is written through the link, and the file keeps its
/// permissions: it holds camera passwords and is often mode 0600.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let target: PathBuf = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".camstream-config-")
        .suffix(".tmp")
        .tempfile_in(&dir)?;
    if let Ok(meta) = std::fs::metadata(&target) {
        tmp.as_file().set_permissions(meta.permissions())?;
    }
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(&target).map_err(|e| e.error)?;
    std::fs::File::open(&dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, SourceValue};

    const FILE: &str = r#"# camstream config
[server]
listen = "0.0.0.0:8000" # the old port

# The gate.
[[cameras]]
id = 1
name = "Gate"
# main stream
source = "rtsp://admin:pw@10.0.0.1/101"
scale = 0.5 # half

[[cameras]]
id = "desk"
source = 0

# trailing comment
"#;

    fn camera(id: &str, source: &str) -> CameraConfig {
        CameraConfig {
            source: Some(SourceValue::Text(source.into())),
            ..CameraConfig::new(CameraId::new(id).unwrap())
        }
    }

    fn ids(text: &str) -> Vec<String> {
        Config::parse(text, None)
            .unwrap()
            .cameras
            .iter()
            .map(|c| c.id.to_string())
            .collect()
    }

    #[test]
    fn add_appends_and_keeps_everything_else() {
        let out = add_camera(FILE, &camera("new", "test:")).unwrap();
        assert!(
            out.starts_with(FILE.trim_end_matches("\n# trailing comment\n")),
            "{out}"
        );
        assert!(out.contains("# trailing comment"));
        assert!(
            out.contains("[[cameras]]\nid = \"new\"\nsource = \"test:\"\n"),
            "{out}"
        );
        assert_eq!(ids(&out), ["1", "desk", "new"]);
        assert!(matches!(
            add_camera(FILE, &camera("1", "test:")),
            Err(EditError::Exists(_))
        ));
        let fresh = add_camera(
            "[server]\nlisten = \"127.0.0.1:1\"\n",
            &camera("a", "test:"),
        )
        .unwrap();
        assert_eq!(ids(&fresh), ["a"]);
    }

    #[test]
    fn replace_keeps_comments_and_unchanged_values() {
        let mut gate = camera("1", "rtsp://admin:pw@10.0.0.1/101");
        gate.name = Some("Front gate".into());
        gate.scale = Some(0.25);
        let out = replace_camera(FILE, &gate).unwrap();
        assert!(out.contains("# The gate.\n[[cameras]]\nid = 1\n"), "{out}");
        assert!(out.contains("name = \"Front gate\"\n"), "{out}");
        assert!(
            out.contains("# main stream\nsource = \"rtsp://admin:pw@10.0.0.1/101\"\n"),
            "{out}"
        );
        assert!(out.contains("scale = 0.25 # half"), "{out}");
        assert!(out.contains("listen = \"0.0.0.0:8000\" # the old port"));
        assert_eq!(ids(&out), ["1", "desk"]);

        // Keys the new camera does not set are removed.
        let out = replace_camera(FILE, &camera("1", "test:")).unwrap();
        let config = Config::parse(&out, None).unwrap();
        let cam = config.cameras[0].config.clone().unwrap();
        assert_eq!(cam, camera("1", "test:"));
        assert!(matches!(
            replace_camera(FILE, &camera("nope", "test:")),
            Err(EditError::NotFound(_))
        ));
    }

    #[test]
    fn remove_takes_the_entry_and_its_comments() {
        let out = remove_camera(FILE, &CameraId::new("1").unwrap()).unwrap();
        assert!(
            !out.contains("The gate") && !out.contains("10.0.0.1"),
            "{out}"
        );
        assert!(out.contains("# camstream config") && out.contains("# trailing comment"));
        assert_eq!(ids(&out), ["desk"]);
        let out = remove_camera(&out, &CameraId::new("desk").unwrap()).unwrap();
        assert!(ids(&out).is_empty());
    }

    #[test]
    fn inline_arrays_are_edited_too() {
        let text = "cameras = [{ id = \"a\", source = \"test:\" }]\n";
        let out = add_camera(text, &camera("b", "test:ball")).unwrap();
        assert_eq!(ids(&out), ["a", "b"]);
        let out = replace_camera(&out, &camera("a", "test:snow")).unwrap();
        assert!(out.contains("test:snow"), "{out}");
        let out = remove_camera(&out, &CameraId::new("b").unwrap()).unwrap();
        assert_eq!(ids(&out), ["a"]);
    }

    #[test]
    fn atomic_write_replaces_and_keeps_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_atomically(&path, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["c.toml"], "no temporary file is left behind");
    }
}
