//! Which Debian package ships a GStreamer element, so that "no element
//! x264enc" becomes "install gstreamer1.0-plugins-ugly".

/// `element package` lines, generated from a Debian bookworm install by
/// scripts/gen-element-packages.sh.
const TABLE: &str = include_str!("element-packages.txt");

/// Elements of packages camstream does not install by default, matched by
/// prefix: hardware decoders people commonly name in overrides.
const PREFIXES: &[(&str, &str)] = &[
    ("avdec_", "gstreamer1.0-libav"),
    ("avenc_", "gstreamer1.0-libav"),
    ("avdemux_", "gstreamer1.0-libav"),
    ("vaapi", "gstreamer1.0-vaapi"),
    ("gl", "gstreamer1.0-gl"),
    ("omx", "gstreamer1.0-omx-generic"),
];

/// The Debian package that ships `element`, if known.
pub fn debian_package(element: &str) -> Option<&'static str> {
    TABLE
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, package) = line.split_once(' ')?;
            (name == element).then_some(package.trim())
        })
        .or_else(|| {
            PREFIXES
                .iter()
                .find(|(prefix, _)| element.starts_with(prefix))
                .map(|(_, package)| *package)
        })
}

/// "element x is not installed" with the package to install, for errors.
pub fn missing_element_hint(element: &str) -> String {
    match debian_package(element) {
        Some(package) => format!(
            "GStreamer element \"{element}\" is not installed: install the Debian package {package} (apt-get install {package})"
        ),
        None => format!(
            "GStreamer element \"{element}\" is not installed, and no Debian package is known to ship it: check the spelling (gst-inspect-1.0 lists installed elements)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_elements_name_their_package() {
        assert_eq!(debian_package("rtspsrc"), Some("gstreamer1.0-plugins-good"));
        assert_eq!(debian_package("x264enc"), Some("gstreamer1.0-plugins-ugly"));
        assert_eq!(
            debian_package("h264parse"),
            Some("gstreamer1.0-plugins-bad")
        );
        assert_eq!(debian_package("avdec_h264"), Some("gstreamer1.0-libav"));
        assert_eq!(debian_package("clockoverlay"), Some("gstreamer1.0-x"));
        assert_eq!(debian_package("vaapih264dec"), Some("gstreamer1.0-vaapi"));
        assert_eq!(debian_package("nosuchthing"), None);
        assert!(
            missing_element_hint("x264enc").contains("apt-get install gstreamer1.0-plugins-ugly")
        );
    }
}
