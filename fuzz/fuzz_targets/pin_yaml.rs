//! Pinning: finding images in YAML or a Dockerfile never panics; every span
//! is a valid range of the input; rewriting with the identity returns the
//! input byte-for-byte; for YAML without aliases, pinning every site and
//! scanning again finds the same sites with the new values. (Through an
//! alias an image scalar can also be a `kind` or a key, and a Dockerfile
//! image can be rewritten into a stage name, so those cases only get the
//! first checks.)
#![no_main]

use imgate_core::pin::{self, ImageSpan};
use libfuzzer_sys::fuzz_target;

fn identity(text: &str, sites: &[ImageSpan]) {
    for site in sites {
        assert!(
            text.get(site.span.clone()).is_some(),
            "span {:?} out of range",
            site.span
        );
    }
    assert_eq!(pin::rewrite(text, sites, |s| Some(s.image.clone())), text);
    assert_eq!(pin::rewrite_map(text, sites, &Default::default()), text);
}

fn rescan(text: &str, sites: &[ImageSpan]) {
    let pinned = pin::rewrite(text, sites, |s| Some(format!("{}@x", s.image)));
    let again = match pin::find_yaml_images(&pinned) {
        Ok(again) => again,
        Err(err) => panic!("pinned text no longer scans: {err}\n{pinned}"),
    };
    let want: Vec<String> = sites
        .iter()
        .map(|s| {
            if s.templated {
                s.image.clone()
            } else {
                format!("{}@x", s.image)
            }
        })
        .collect();
    let got: Vec<String> = again.into_iter().map(|s| s.image).collect();
    assert_eq!(got, want);
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(sites) = pin::find_yaml_images(text) {
        identity(text, &sites);
        if !text.contains('*') {
            rescan(text, &sites);
        }
    }
    if let Ok(sites) = pin::find_dockerfile_images(text) {
        identity(text, &sites);
    }
});
