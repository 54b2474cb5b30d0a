//! The container image carries only the GStreamer plugins named in
//! packaging/image/elements.txt. These tests keep that list and the
//! pipelines camstream builds in step, without building the image: every
//! element of every golden pipeline (every source kind and every shipped
//! template, tests/golden/) comes from a listed plugin, and every listed
//! name is a real element or plugin. What decodebin picks at run time is
//! checked inside the image by scripts/docker-smoke.sh (`camstream check`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use gstreamer as gst;
use gstreamer::prelude::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The names in elements.txt, without comments and blank lines.
fn listed() -> Vec<String> {
    let path = root().join("packaging/image/elements.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect()
}

/// The plugin of an element factory, or the plugin itself, by name.
fn plugin_of(name: &str) -> Option<String> {
    if let Some(factory) = gst::ElementFactory::find(name) {
        return factory.plugin_name().map(|p| p.to_string());
    }
    gst::Registry::get()
        .find_plugin(name)
        .map(|p| p.plugin_name().to_string())
}

#[test]
fn every_listed_name_is_an_installed_element_or_plugin() {
    camstream::pipeline::init().unwrap();
    let names = listed();
    assert!(names.len() > 10, "elements.txt looks empty: {names:?}");
    let unknown: Vec<&String> = names.iter().filter(|n| plugin_of(n).is_none()).collect();
    // The test machine has every package camstream uses installed
    // (scripts/install-deps.sh), so a name not found here is a typo.
    assert!(
        unknown.is_empty(),
        "packaging/image/elements.txt names no element or plugin: {unknown:?}"
    );
}

#[test]
fn every_element_of_every_golden_pipeline_is_in_the_image() {
    camstream::pipeline::init().unwrap();
    let in_image: BTreeSet<String> = listed().iter().filter_map(|n| plugin_of(n)).collect();
    let mut goldens = 0;
    let mut missing = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("tests/golden")).unwrap() {
        let path = entry.unwrap().path();
        // tests/golden/graphs/: camstream's own part, checked below.
        if path.is_dir() {
            continue;
        }
        let description = std::fs::read_to_string(&path).unwrap();
        let pipeline = gst::parse::launch_full(&description, None, gst::ParseFlags::FATAL_ERRORS)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .downcast::<gst::Bin>()
            .unwrap();
        for element in pipeline.iterate_recurse().into_iter().map(Result::unwrap) {
            let factory = element.factory().unwrap();
            // camstream's own elements (camstreamjpegdec) are registered
            // by the binary itself and belong to no plugin file.
            let Some(plugin) = factory.plugin_name() else {
                continue;
            };
            let plugin = plugin.to_string();
            if !in_image.contains(&plugin) {
                missing.insert(format!(
                    "{} (plugin {plugin}, in {})",
                    factory.name(),
                    path.file_name().unwrap().to_string_lossy()
                ));
            }
        }
        goldens += 1;
    }
    assert!(goldens > 20, "only {goldens} golden pipelines found");
    // camstream's own part after the source (tees, scalers, encoders,
    // appsinks), built in code: its element graphs name each factory as
    // `name: factory settings`.
    let mut graphs = 0;
    for entry in std::fs::read_dir(root().join("tests/golden/graphs")).unwrap() {
        let path = entry.unwrap().path();
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            if line.starts_with(' ') {
                continue;
            }
            let Some(factory) = line.split_whitespace().nth(1) else {
                continue;
            };
            let Some(found) = gst::ElementFactory::find(factory) else {
                continue; // "the description, parsed as a bin"
            };
            let Some(plugin) = found.plugin_name() else {
                continue;
            };
            if !in_image.contains(plugin.as_str()) {
                missing.insert(format!(
                    "{factory} (plugin {plugin}, in graphs/{})",
                    path.file_name().unwrap().to_string_lossy()
                ));
            }
        }
        graphs += 1;
    }
    assert!(graphs >= 5, "only {graphs} element graphs found");
    assert!(
        missing.is_empty(),
        "elements camstream's pipelines use that the image would not carry; \
         add them to packaging/image/elements.txt: {missing:#?}"
    );
}
