//! Image references: parsing never panics, and whatever parses prints to a
//! string that parses back to the same reference and prints the same again.
#![no_main]

use imgate_core::reference::ImageRef;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(reference) = ImageRef::parse(input) else {
        return;
    };
    let printed = reference.to_string();
    let again = match ImageRef::parse(&printed) {
        Ok(again) => again,
        Err(err) => panic!("{input:?} printed as {printed:?}, which does not parse: {err}"),
    };
    assert_eq!(again, reference, "{input:?} -> {printed:?}");
    assert_eq!(again.to_string(), printed);
});
