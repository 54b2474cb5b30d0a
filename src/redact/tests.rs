//! Every rule of the redactor, and the ordinary text it must leave alone.

use super::*;

/// `(input, expected)` pairs for [`redact_text`].
fn check(cases: &[(&str, &str)]) {
    for (input, expected) in cases {
        assert_eq!(redact_text(input), *expected, "input: {input}");
        // Masking twice changes nothing.
        assert_eq!(redact_text(expected), *expected, "input: {expected}");
    }
}

#[test]
fn url_passwords() {
    check(&[
        (
            "rtsp://admin:12345@192.168.1.64:554/Streaming/Channels/101",
            "rtsp://admin:***@192.168.1.64:554/Streaming/Channels/101",
        ),
        (
            "could not open \"rtsp://u:p@h/x\" and http://a:b@c",
            "could not open \"rtsp://u:***@h/x\" and http://a:***@c",
        ),
        // Percent-encoded.
        (
            "rtsp://admin:p%40ss%3Aw%21rd@cam/x",
            "rtsp://admin:***@cam/x",
        ),
        // '@', ':' and '!' unencoded: the last '@' of the authority ends it.
        ("rtsp://u:p@ss@h/x", "rtsp://u:***@h/x"),
        ("rtsp://u:p:a:ss@h:554/x", "rtsp://u:***@h:554/x"),
        ("RTSP://Admin:Pa!ss@H/x", "RTSP://Admin:***@H/x"),
        // Unencoded '/', '?' and '#': not valid URLs, masked all the same.
        ("rtsp://admin:pa/ss@cam/x", "rtsp://admin:***@cam/x"),
        ("rtsp://admin:pa?ss@cam/x", "rtsp://admin:***@cam/x"),
        ("rtsp://admin:pa#ss@cam/x", "rtsp://admin:***@cam/x"),
        // A user name holding '@'.
        (
            "rtsp://me@mail.org:pw99@cam/x",
            "rtsp://me@mail.org:***@cam/x",
        ),
        // Any scheme, in any sentence.
        (
            "souphttpsrc location=https://u:v@w/x.mjpg ! jpegdec",
            "souphttpsrc location=https://u:***@w/x.mjpg ! jpegdec",
        ),
        ("<rtsps://u:secret@h>", "<rtsps://u:***@h>"),
    ]);
}

#[test]
fn urls_without_a_password_are_unchanged() {
    for text in [
        "rtsp://h/x",
        "rtsp://user@h/x",
        "rtsp://user:@h/x",
        "http://192.168.1.64:8080/video.mjpg",
        "http://host/path:x@y",
        "http://host:8080/snap?mail=a@b.org",
        "https://example.org/a?b=c&d=e#f",
        "no url here",
        "a://",
        "rtsp://[fe80::1]:554/x",
        "rtsp://admin:***@cam/x",
    ] {
        assert_eq!(redact_text(text), text);
    }
}

#[test]
fn credential_query_parameters() {
    check(&[
        // Foscam.
        (
            "http://cam/videostream.cgi?user=admin&pwd=SECRET",
            "http://cam/videostream.cgi?user=admin&pwd=***",
        ),
        // Dahua and Amcrest.
        (
            "http://cam/cgi-bin/mjpg/video.cgi?loginuse=admin&loginpas=SECRET&channel=1",
            "http://cam/cgi-bin/mjpg/video.cgi?loginuse=admin&loginpas=***&channel=1",
        ),
        // Hikvision: base64 of user:password.
        (
            "http://cam/ISAPI/Streaming/channels/102/httpPreview?auth=YWRtaW46MTIzNDU=",
            "http://cam/ISAPI/Streaming/channels/102/httpPreview?auth=***",
        ),
        // Case and percent-encoding.
        (
            "http://h/x?PassWord=a%26b&n=1",
            "http://h/x?PassWord=***&n=1",
        ),
        ("http://h/x?PWD=s#frag", "http://h/x?PWD=***#frag"),
        // HTML-escaped separators.
        ("/x?user=a&amp;pwd=s3", "/x?user=a&amp;pwd=***"),
    ]);
    let names = [
        "password",
        "passwd",
        "pass",
        "pwd",
        "pw",
        "psw",
        "passwort",
        "loginpas",
        "loginpass",
        "user_pwd",
        "usrPwd",
        "token",
        "access_token",
        "api_key",
        "apikey",
        "x-api-key",
        "key",
        "auth",
        "authkey",
        "secret",
        "client_secret",
        "sig",
        "signature",
        "X-Amz-Signature",
        "session",
    ];
    for name in names {
        for name in [name.to_string(), name.to_ascii_uppercase()] {
            let text = format!("http://cam/x.cgi?a=1&{name}=s3cr3t.v4lue&b=2");
            assert_eq!(
                redact_text(&text),
                format!("http://cam/x.cgi?a=1&{name}=***&b=2"),
                "{name}"
            );
        }
    }
}

#[test]
fn secret_properties() {
    check(&[
        (
            "rtspsrc user-id=admin user-pw=secret latency=100",
            "rtspsrc user-id=admin user-pw=*** latency=100",
        ),
        // Spaces around '=', as gst-launch accepts.
        (
            "rtspsrc user-pw = x latency=1",
            "rtspsrc user-pw = *** latency=1",
        ),
        ("rtspsrc user-pw= x", "rtspsrc user-pw= ***"),
        // Quoted, with the quotes and what they hold masked together.
        (
            "souphttpsrc user-pw=\"s e c\" ! jpegdec",
            "souphttpsrc user-pw=*** ! jpegdec",
        ),
        ("x proxy-pw='a \\' b' ! y", "x proxy-pw=*** ! y"),
        // Escaped spaces.
        ("x user-pw=a\\ b\\ c ! y", "x user-pw=*** ! y"),
        // Escaped quotes, as a Debug-printed message shows them.
        ("\"x user-pw=\\\"a b\\\" ! y\"", "\"x user-pw=*** ! y\""),
        // A typed value: the type stays readable.
        ("x user-pw=(string)\"a b\" ! y", "x user-pw=(string)*** ! y"),
        // Case, and names that only say "password" somewhere.
        ("x Password=abc ! y", "x Password=*** ! y"),
        ("x PROXY-PASSWORD = abc ! y", "x PROXY-PASSWORD = *** ! y"),
        ("srtsrc passphrase=abcdefghij", "srtsrc passphrase=***"),
        ("srtpdec key=0123456789abcdef", "srtpdec key=***"),
        ("x srtp-key=00ff ! y", "x srtp-key=*** ! y"),
        ("x rtspsrc0::user-pw=abc ! y", "x rtspsrc0::user-pw=*** ! y"),
        (
            "souphttpsrc cookies=\"session=abc\"",
            "souphttpsrc cookies=***",
        ),
        // In JSON.
        (
            "{\"user\": \"admin\", \"password\": \"a\\\"b\"}",
            "{\"user\": \"admin\", \"password\": ***}",
        ),
    ]);
}

#[test]
fn authorization_values() {
    check(&[
        (
            "Authorization: Basic YWRtaW46aHVudGVyMg==",
            "Authorization: Basic ***",
        ),
        ("authorization: bearer abc.def", "authorization: bearer ***"),
        (
            "{\"authorization\": \"Bearer 0123456789abcdef\"}",
            "{\"authorization\": \"Bearer ***\"}",
        ),
        (
            "Authorization: Digest username=\"a\", response=\"ff\"\nnext",
            "Authorization: Digest ***\nnext",
        ),
        (
            "extra-headers=\"h, Authorization=(string)\\\"Basic YTpi\\\"\"",
            "extra-headers=\"h, Authorization=(string)\\\"Basic ***\\\"\"",
        ),
        (
            "curl -H 'Authorization: Token abc123'",
            "curl -H 'Authorization: Token ***'",
        ),
        // A bare scheme with a credential-looking word.
        (
            "sent Bearer 0123456789abcdef0123 to it",
            "sent Bearer *** to it",
        ),
        ("basic YWRtaW46MTIzNDU=", "basic ***"),
    ]);
}

#[test]
fn ordinary_text_is_left_alone() {
    for text in [
        "queue max-size-buffers=1 max-size-bytes=0 ! x264enc key-int-max=30 pass=quant",
        "videotestsrc pattern=ball is-live=true ! video/x-raw,width=320",
        "rtspsrc location=rtsp://cam/x user-id=admin latency=100 protocols=tcp",
        "http://cam/x.cgi?user=admin&channel=1&resolution=640x480",
        "passthrough=true bypass=1 keyframe-interval=2 sync=false",
        "HTTP basic users and Bearer tokens; basic authentication",
        "the RTSP server at 10.0.0.9:554 refused the credentials (401 Unauthorized)",
        "scale = 0.25 is out of range: use a factor above 0 and at most 1",
        "2024-05-12T10:12:34.512345Z  INFO camstream: listening on http://0.0.0.0:8000/",
        "{\"password_sha256\": 5, \"token\": null}",
        "a = b, c == d, x=",
        "",
    ] {
        assert_eq!(redact_text(text), text);
    }
}

#[test]
fn placeholders_in_help_texts_are_kept() {
    for text in [
        "send Authorization: Bearer TOKEN or HTTP basic credentials (or ?token=TOKEN)",
        "curl -H \"Authorization: Bearer $TOKEN\" http://host/api?token=<token>",
        "set source (e.g. 0, \"rtsp://user:<password>@host/path\")",
        "user-pw={password}",
        "user-pw=<the camera's password> ! next",
        "Authorization: Bearer <admin token>",
    ] {
        assert_eq!(redact_text(text), text);
    }
}

#[test]
fn secrets_are_found_in_every_form() {
    let found = find_secrets(
        "rtsp://admin:p%40ss@h/x?pwd=a+b%21 ! x user-pw=\"q r\" extra=\"Authorization: Basic YTpzM2NyM3Q=\"",
    );
    for expected in [
        "p%40ss",
        "p@ss",
        basic_credentials("admin", "p@ss").as_str(),
        "a+b%21",
        "a+b!",
        "a b!",
        "\"q r\"",
        "q r",
        "YTpzM2NyM3Q=",
        "s3cr3t",
    ] {
        assert!(found.iter().any(|f| f == expected), "{expected}: {found:?}");
    }
    assert!(find_secrets("rtsp://cam/x ! y latency=1").is_empty());
}

#[test]
fn known_secrets_are_masked_in_every_form() {
    let r = Redactor::new(["hunter2", "p@ss word", "tok\"en\\1"]);
    assert_eq!(r.redact("wrong password hunter2!"), "wrong password ***!");
    assert_eq!(r.redact("HUNTER2 in capitals"), "*** in capitals");
    assert_eq!(r.redact("p%40ss%20word in a url"), "*** in a url");
    assert_eq!(r.redact("p%40ss+word in a form"), "*** in a form");
    assert_eq!(
        r.redact("p%40ss%20word lower: p%40ss%20word"),
        "*** lower: ***"
    );
    assert_eq!(r.redact("escaped p@ss\\ word"), "escaped ***");
    assert_eq!(r.redact("json tok\\\"en\\\\1"), "json ***");
    // The base64 of user:password, given as a secret of its own.
    let basic = basic_credentials("admin", "hunter2");
    assert_eq!(
        Redactor::new([basic.clone()]).redact(&format!("Basic={basic}")),
        "Basic=***"
    );
    // Too short to mask by value.
    assert_eq!(
        Redactor::new(["x", "abc"]).redact("x marks abc"),
        "x marks abc"
    );
    // Printing a redactor does not print its secrets.
    assert!(!format!("{r:?}").contains("hunter2"));
}

#[test]
fn unions_and_the_shared_set() {
    let known = KnownSecrets::default();
    assert!(known.redactor().is_empty());
    known.learn(&Redactor::new(["first-secret"]));
    known.learn(&Redactor::new(["second-secret"]));
    // Secrets are never forgotten.
    known.learn(&Redactor::new(["first-secret"]));
    assert_eq!(known.redactor().len(), 2);
    assert_eq!(known.redact("first-secret second-secret"), "*** ***");
    assert!(!format!("{known:?}").contains("secret-"));
}

#[test]
fn json_stays_json() {
    let r = Redactor::new(["hunter2"]);
    let line = r#"{"ts":"2024","fields":{"message":"failed: user-pw=a\"b c hunter2","n":12345},"x":["rtsp://u:p@h"]}"#;
    let masked = r.redact_json(line);
    let value: serde_json::Value = serde_json::from_str(&masked).expect("still JSON");
    assert_eq!(value["fields"]["message"], "failed: user-pw=*** c ***");
    assert_eq!(value["fields"]["n"], 12345);
    assert_eq!(value["x"][0], "rtsp://u:***@h");
    assert_eq!(r.redact_json("{\"a\":\"plain\"}"), "{\"a\":\"plain\"}");
    // A truncated line is masked as text.
    assert_eq!(r.redact_json("{\"a\":\"hunter2"), "{\"a\":\"***");
}

#[test]
fn any_text_is_handled_without_panicking() {
    // Every character a rule looks at, next to multi-byte ones, in many
    // random arrangements: slicing must stay on character boundaries.
    let alphabet: Vec<char> = "=:@/?#&;!\"'\\<>()[]{} \n\tapswdkyuthorizbcenPWé€😀0A"
        .chars()
        .collect();
    let words = [
        "user-pw",
        "pwd",
        "password",
        "authorization",
        "bearer ",
        "basic ",
        "rtsp://",
        "\":",
        "é€pw",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let r = Redactor::new(["é€pw", "secret😀"]);
    for _ in 0..20_000 {
        let len = (next() % 40) as usize;
        let mut text = String::new();
        for _ in 0..len {
            if next() % 5 == 0 {
                text.push_str(words[(next() % words.len() as u64) as usize]);
            } else {
                text.push(alphabet[(next() % alphabet.len() as u64) as usize]);
            }
        }
        let masked = r.redact(&text);
        assert!(!masked.contains("é€pw"), "{text:?} -> {masked:?}");
        // Not JSON: only what sits in its strings is masked, but nothing
        // panics.
        let _ = r.redact_json(&text);
        let _ = find_secrets(&text);
    }
}
