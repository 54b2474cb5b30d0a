use std::path::Path;

use bytes::Bytes;

use super::*;

fn config(extra: &str) -> UpstreamConfig {
    toml::from_str(&format!(
        "name = \"edge-1\"\nurl = \"http://edge:8000\"\n{extra}"
    ))
    .unwrap()
}

fn resolve(extra: &str) -> Result<Upstream, String> {
    Upstream::resolve(&config(extra), Path::new("/nonexistent"))
}

#[test]
fn an_upstream_resolves_with_its_defaults() {
    let upstream = resolve("token = \"view-token-0123456789\"").unwrap();
    assert_eq!(upstream.name, "edge-1");
    assert_eq!(upstream.display(), "http://edge:8000");
    assert_eq!(upstream.refresh, Duration::from_secs(30));
    assert_eq!(upstream.trust, Trust::System);
    assert_eq!(upstream.secrets(), ["view-token-0123456789"]);
    // Debug never shows the token.
    assert!(!format!("{upstream:?}").contains("view-token"));
    let id = upstream.local_id("gate").unwrap();
    assert_eq!(id.as_str(), "edge-1.gate");
    assert!(upstream.owns(&id));
    assert!(!upstream.owns(&CameraId::new("edge-10.gate").unwrap()));
    assert!(!upstream.owns(&CameraId::new("edge-1").unwrap()));
    assert!(upstream.local_id(&"x".repeat(60)).is_err());
}

#[test]
fn a_token_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t"), "file-token-0123456789\n").unwrap();
    let upstream = Upstream::resolve(&config("token_file = \"t\""), dir.path()).unwrap();
    assert_eq!(upstream.secrets(), ["file-token-0123456789"]);
}

#[test]
fn bad_entries_name_the_key_and_the_fix() {
    for (extra, expect) in [
        ("", "no token: set token_file"),
        (
            "token = \"a-token-0123456789\"\ntoken_file = \"t\"",
            "token or token_file, not both",
        ),
        (
            "token_file = \"missing\"",
            "token_file /nonexistent/missing cannot be read",
        ),
        ("token = \"\"", "the token is empty"),
        ("token = \"two words\"", "spaces or control characters"),
        (
            "token = \"a-token-0123456789\"\nrefresh_s = 0",
            "refresh_s = 0 is out of range",
        ),
        (
            "token = \"a-token-0123456789\"\nfingerprint = \"sha256:00\"",
            "apply to https:// only",
        ),
        (
            "token = \"a-token-0123456789\"\nfingerprint = \"sha256:00\"\nca = \"ca.pem\"",
            "set ca or fingerprint, not both",
        ),
    ] {
        let err = resolve(extra).unwrap_err();
        assert!(err.contains(expect), "{extra}: {err}");
        assert!(!err.contains("0123456789"), "{err}");
    }
    let mut bad = config("token = \"a-token-0123456789\"");
    for (name, expect) in [
        ("edge.1", "contains '.'"),
        ("", "must be 1 to 32"),
        (&"e".repeat(33), "must be 1 to 32"),
    ] {
        bad.name = name.to_string();
        let err = Upstream::resolve(&bad, Path::new(".")).unwrap_err();
        assert!(err.contains(expect), "{name}: {err}");
    }
    bad.name = "edge".into();
    for (url, expect) in [
        ("edge:8000", "not http:// or https://"),
        ("rtsp://edge/x", "not http:// or https://"),
        ("not a url", "is not a URL"),
        ("https://admin:pw@edge", "has credentials"),
        ("https://edge/?token=abc", "query or fragment"),
    ] {
        bad.url = url.into();
        let err = Upstream::resolve(&bad, Path::new(".")).unwrap_err();
        assert!(err.contains(expect), "{url}: {err}");
        assert!(!err.contains(":pw@"), "{err}");
    }
}

#[test]
fn trust_by_fingerprint_or_ca_file() {
    let hex = "AB".repeat(32);
    let colons = vec!["ab"; 32].join(":");
    for text in [hex.clone(), format!("sha256:{colons}"), colons.clone()] {
        assert_eq!(
            Trust::fingerprint(&text).unwrap(),
            Trust::Fingerprint([0xAB; 32]),
            "{text}"
        );
    }
    for bad in ["sha256:AB", "", &"ZZ".repeat(32)] {
        let err = Trust::fingerprint(bad).unwrap_err();
        assert!(err.contains("camstream cert"), "{err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, "not a certificate").unwrap();
    let err = Trust::ca_file(&path).unwrap_err();
    assert!(err.contains("holds no certificate"), "{err}");
    let err = Trust::ca_file(&dir.path().join("missing.pem")).unwrap_err();
    assert!(err.contains("cannot be read"), "{err}");
}

fn read_all(reader: &mut PartReader) -> Vec<Part> {
    let mut parts = Vec::new();
    while let Some(part) = reader.next_part().unwrap() {
        parts.push(part);
    }
    parts
}

/// What camstream's own encoder sends (http::mjpeg), cut into every
/// possible pair of chunks: the parts come out the same.
#[test]
fn parts_are_cut_by_length_across_any_chunking() {
    let body = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 6\r\n\r\n\xff\xd8ab\xff\xd9\r\n--frame\r\n\
Content-Type: image/jpeg\r\nContent-Length: 4\r\nX-Camstream-Frame: placeholder\r\n\r\n\xff\xd8\xff\xd9\r\n--frame\r\n";
    for cut in 0..body.len() {
        let mut reader = PartReader::new(crate::http::mjpeg::CONTENT_TYPE).unwrap();
        reader.push(&body[..cut]);
        let mut parts = read_all(&mut reader);
        reader.push(&body[cut..]);
        parts.extend(read_all(&mut reader));
        assert_eq!(
            parts,
            [
                Part {
                    jpeg: Bytes::from_static(b"\xff\xd8ab\xff\xd9"),
                    placeholder: false
                },
                Part {
                    jpeg: Bytes::from_static(b"\xff\xd8\xff\xd9"),
                    placeholder: true
                }
            ],
            "cut at {cut}"
        );
    }
}

#[test]
fn parts_without_length_end_at_the_next_boundary() {
    let mut reader =
        PartReader::new("multipart/x-mixed-replace;boundary=\"--myboundary\"").unwrap();
    reader.push(b"\r\n--myboundary\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8one\xff\xd9\r\n--myboundary\r\n\r\n\xff\xd8two");
    let parts = read_all(&mut reader);
    assert_eq!(parts.len(), 1);
    assert_eq!(&parts[0].jpeg[..], b"\xff\xd8one\xff\xd9");
    reader.push(b"\xff\xd9\r\n--myboundary\r\n");
    assert_eq!(&read_all(&mut reader)[0].jpeg[..], b"\xff\xd8two\xff\xd9");
}

/// A part without Content-Length, a byte at a time: its end is found
/// however the boundary is split.
#[test]
fn parts_without_length_arrive_in_any_pieces() {
    let body = b"--b\r\n\r\n\xff\xd8\r\n-one\xff\xd9\r\n--b\r\n\r\n\xff\xd8two\xff\xd9\r\n--b\r\n";
    let mut reader = PartReader::new("multipart/x-mixed-replace; boundary=b").unwrap();
    let mut parts = Vec::new();
    for byte in body {
        reader.push(&[*byte]);
        parts.extend(read_all(&mut reader));
    }
    let jpegs: Vec<&[u8]> = parts.iter().map(|p| &p.jpeg[..]).collect();
    assert_eq!(
        jpegs,
        [
            &b"\xff\xd8\r\n-one\xff\xd9"[..],
            &b"\xff\xd8two\xff\xd9"[..]
        ]
    );
}

#[test]
fn broken_streams_are_errors() {
    assert!(PartReader::new("image/jpeg").is_err());
    assert!(PartReader::new("multipart/x-mixed-replace").is_err());
    assert!(PartReader::new("multipart/x-mixed-replace; boundary=").is_err());
    let mut reader = PartReader::new("multipart/x-mixed-replace; boundary=frame").unwrap();
    reader.push(b"<html>not a stream</html>\r\n");
    let err = reader.next_part().unwrap_err().to_string();
    assert!(err.contains("expected the boundary line --frame"), "{err}");
    let mut reader = PartReader::new("multipart/x-mixed-replace; boundary=frame").unwrap();
    reader.push(b"--frame\r\nContent-Length: lots\r\n\r\n");
    assert!(matches!(
        reader.next_part(),
        Err(MultipartError::BadLength(_))
    ));
    let mut reader = PartReader::new("multipart/x-mixed-replace; boundary=frame").unwrap();
    reader.push(b"--frame\r\n");
    reader.push(&vec![b'x'; 9000]);
    assert_eq!(reader.next_part(), Err(MultipartError::HeadersTooLong));
}

#[test]
fn lists_wake_only_on_change() {
    let lists = Lists::default();
    let camera = |id: &str| RemoteCamera {
        id: id.into(),
        name: id.into(),
        sizes: Vec::new(),
    };
    lists.set("edge", vec![camera("a")]);
    assert_eq!(lists.get("edge"), [camera("a")]);
    // The change above left one wake-up; an equal list adds none.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(1), lists.changed())
            .await
            .expect("woken by the change");
        lists.set("edge", vec![camera("a")]);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), lists.changed())
                .await
                .is_err()
        );
    });
    lists.forget("edge");
    assert!(lists.get("edge").is_empty());
}
