//! RFC 7512 `pkcs11:` URIs as cosign writes them: path attributes
//! (`token`, `manufacturer`, `model`, `serial`, `slot-id`, `object`, `id`,
//! `type`) separated by `;`, query attributes (`module-path`, `pin-value`,
//! `pin-source`) after `?` separated by `&`, values percent-encoded.
//!
//! The PIN is kept in zeroizing memory and never appears in
//! [`Pkcs11Uri::display_name`], the form every message uses.

use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::error::KeyError;

/// A URI is a line on a command line or in a CI file; anything longer is a
/// mistake, and the bound keeps parsing trivially cheap.
const MAX_URI_LEN: usize = 4096;
/// What replaces the PIN in every printed form of the URI.
const REDACTED: &str = "<redacted>";

/// A parsed `pkcs11:` URI.
#[derive(Debug)]
pub struct Pkcs11Uri {
    /// `token=`: the token label.
    pub token: Option<String>,
    /// `manufacturer=`: the token's manufacturer ID.
    pub manufacturer: Option<String>,
    /// `model=`: the token's model.
    pub model: Option<String>,
    /// `serial=`: the token's serial number.
    pub serial: Option<String>,
    /// `slot-id=`: the slot number.
    pub slot_id: Option<u64>,
    /// `object=`: the key's label (`CKA_LABEL`).
    pub object: Option<String>,
    /// `id=`: the key's `CKA_ID`, bytes.
    pub id: Option<Vec<u8>>,
    /// `module-path=`: the PKCS#11 module to load.
    pub module_path: Option<PathBuf>,
    /// `pin-value=`: the PIN itself (discouraged: it is then on a command line).
    pub pin_value: Option<Zeroizing<String>>,
    /// `pin-source=`: a file holding the PIN (`file:` prefix optional).
    pub pin_source: Option<PathBuf>,
    display: String,
}

impl Pkcs11Uri {
    /// Parses `text`; errors name the attribute at fault and never echo the
    /// PIN, nor any query text: an attribute imgate does not know is named
    /// by its position, since it may be part of a PIN split by an
    /// unencoded `&` or `;`.
    pub fn parse(text: &str) -> Result<Pkcs11Uri, KeyError> {
        let display = redact(text);
        let malformed = |detail: String| KeyError::Malformed {
            key: display.clone(),
            detail,
        };
        if text.len() > MAX_URI_LEN {
            return Err(malformed(format!("longer than {MAX_URI_LEN} bytes")));
        }
        let rest = strip_scheme(text)
            .ok_or_else(|| malformed("does not start with pkcs11:".to_string()))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut uri = Pkcs11Uri {
            token: None,
            manufacturer: None,
            model: None,
            serial: None,
            slot_id: None,
            object: None,
            id: None,
            module_path: None,
            pin_value: None,
            pin_source: None,
            display: display.clone(),
        };
        for attr in attributes(path, ';') {
            let raw = attr
                .value
                .ok_or_else(|| malformed(format!("{} has no '='", attr.describe("path"))))?;
            let name = attr.known.ok_or_else(|| {
                malformed(format!(
                    "{}: unsupported (imgate reads token, manufacturer, model, serial, \
                     slot-id, object, id and type)",
                    attr.describe("path")
                ))
            })?;
            let bytes = percent_decode(raw).map_err(|e| malformed(format!("{name}: {e}")))?;
            let text_value = || {
                String::from_utf8(bytes.clone())
                    .map_err(|_| malformed(format!("{name} is not UTF-8")))
            };
            let slot: &mut Option<String> = match name {
                "token" => &mut uri.token,
                "manufacturer" => &mut uri.manufacturer,
                "model" => &mut uri.model,
                "serial" => &mut uri.serial,
                "object" => &mut uri.object,
                "id" => {
                    set_once(&mut uri.id, bytes.clone(), name).map_err(&malformed)?;
                    continue;
                }
                "slot-id" => {
                    let value = text_value()?;
                    let number = value
                        .parse::<u64>()
                        .map_err(|_| malformed(format!("slot-id {value:?} is not a number")))?;
                    set_once(&mut uri.slot_id, number, name).map_err(&malformed)?;
                    continue;
                }
                "type" => {
                    let value = text_value()?;
                    if value != "private" {
                        return Err(malformed(format!(
                            "type={value}: signing needs the private key (type=private)"
                        )));
                    }
                    continue;
                }
                other => {
                    return Err(malformed(format!(
                        "{other} is a query attribute: put it after '?'"
                    )))
                }
            };
            let value = text_value()?;
            set_once(slot, value, name).map_err(&malformed)?;
        }
        for attr in attributes(query, '&') {
            let raw = attr.value.ok_or_else(|| {
                malformed(format!(
                    "{} has no '=' (percent-encode '&' and ';' inside a value)",
                    attr.describe("query")
                ))
            })?;
            let name = attr.known.ok_or_else(|| {
                malformed(format!(
                    "{}: unsupported (imgate reads module-path, pin-value and pin-source; \
                     percent-encode '&' and ';' inside a value)",
                    attr.describe("query")
                ))
            })?;
            let bytes =
                Zeroizing::new(percent_decode(raw).map_err(|e| malformed(format!("{name}: {e}")))?);
            let value = Zeroizing::new(
                String::from_utf8(bytes.to_vec())
                    .map_err(|_| malformed(format!("{name} is not UTF-8")))?,
            );
            match name {
                "module-path" => {
                    set_once(&mut uri.module_path, PathBuf::from(value.as_str()), name)
                        .map_err(&malformed)?;
                }
                "pin-value" => set_once(&mut uri.pin_value, value, name).map_err(&malformed)?,
                "pin-source" => {
                    let path = value.strip_prefix("file:").unwrap_or(&value);
                    set_once(&mut uri.pin_source, PathBuf::from(path), name).map_err(&malformed)?;
                }
                "module-name" => {
                    return Err(malformed(
                        "module-name is not supported; give the module's file with module-path"
                            .to_string(),
                    ))
                }
                other => {
                    return Err(malformed(format!(
                        "{other} is a path attribute: put it before '?'"
                    )))
                }
            }
        }
        if uri.pin_value.is_some() && uri.pin_source.is_some() {
            return Err(malformed(
                "both pin-value and pin-source are given".to_string(),
            ));
        }
        Ok(uri)
    }

    /// The URI as given, with the PIN replaced: the name used in every
    /// message and log line.
    pub fn display_name(&self) -> &str {
        &self.display
    }
}

/// Path attribute names imgate knows.
const PATH_ATTRIBUTES: [&str; 8] = [
    "token",
    "manufacturer",
    "model",
    "serial",
    "slot-id",
    "object",
    "id",
    "type",
];
/// Query attribute names imgate knows.
const QUERY_ATTRIBUTES: [&str; 4] = ["module-path", "module-name", "pin-value", "pin-source"];

/// Attribute names imgate knows, path and query alike: the only URI text
/// an error may name. The printed form keeps an attribute's value only
/// where the name belongs to its section (`object=` after `?` may be the
/// rest of a PIN cut by an unencoded `&`).
fn known(name: &str) -> Option<&'static str> {
    PATH_ATTRIBUTES
        .iter()
        .chain(QUERY_ATTRIBUTES.iter())
        .find(|k| k.eq_ignore_ascii_case(name))
        .copied()
}

/// One `name=value` of the path or query.
struct Attr<'a> {
    /// 1-based position in its section.
    index: usize,
    /// The name as imgate knows it (decoded, case-folded), if it does.
    known: Option<&'static str>,
    /// The name as written.
    raw_name: &'a str,
    /// The value as written (still percent-encoded); `None` without `=`.
    value: Option<&'a str>,
}

impl Attr<'_> {
    /// The attribute as an error may name it: by its name when imgate knows
    /// it, else by position.
    fn describe(&self, section: &str) -> String {
        match self.known {
            Some(name) => format!("{section} attribute {name}"),
            None => format!("{section} attribute {}", self.index),
        }
    }
}

fn strip_scheme(text: &str) -> Option<&str> {
    text.get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("pkcs11:"))
        .map(|_| &text[7..])
}

/// The non-empty attributes of a section split at `sep`. Names are matched
/// after percent-decoding and ASCII case-folding, so `PIN-VALUE` and
/// `pin%2Dvalue` are the PIN too, and never slip through as "unknown".
fn attributes(section: &str, sep: char) -> impl Iterator<Item = Attr<'_>> {
    section
        .split(sep)
        .filter(|a| !a.is_empty())
        .enumerate()
        .map(|(i, attr)| {
            let (raw_name, value) = match attr.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (attr, None),
            };
            let known = percent_decode(raw_name)
                .ok()
                .and_then(|name| String::from_utf8(name).ok())
                .and_then(|name| known(&name));
            Attr {
                index: i + 1,
                known,
                raw_name,
                value,
            }
        })
}

fn set_once<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("attribute {name} is given twice"));
    }
    *slot = Some(value);
    Ok(())
}

/// Decodes `%XX` escapes; any other byte stands for itself.
fn percent_decode(raw: &str) -> Result<Vec<u8>, String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape at byte {i}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// The printable form of `text`, made from its parsed attributes rather
/// than by searching the text: known attributes are kept as written, the
/// value of `pin-value` (however its name is spelt) is replaced, and any
/// other attribute (an unknown name, or a fragment without `=`, such as
/// the rest of a PIN after an unencoded `&`) is replaced whole. Works on
/// unparsable input too: errors use it.
pub(crate) fn redact(text: &str) -> String {
    let Some(rest) = strip_scheme(text) else {
        return REDACTED.to_string();
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    let section = |section: &str, sep: char, belongs: &[&str]| -> String {
        let shown: Vec<String> = attributes(section, sep)
            .map(|attr| match (attr.known, attr.value) {
                (Some("pin-value"), Some(_)) => format!("{}={REDACTED}", attr.raw_name),
                (Some(name), Some(value)) if belongs.contains(&name) => {
                    format!("{}={value}", attr.raw_name)
                }
                _ => REDACTED.to_string(),
            })
            .collect();
        shown.join(&sep.to_string())
    };
    let mut out = format!("{}{}", &text[..7], section(path, ';', &PATH_ATTRIBUTES));
    if let Some(query) = query {
        out.push('?');
        out.push_str(&section(query, '&', &QUERY_ATTRIBUTES));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn cosign_style_uri_parses() {
        let uri = Pkcs11Uri::parse(
            "pkcs11:token=My%20Token;slot-id=1;id=%4a%8d;object=release?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234",
        )
        .unwrap();
        assert_eq!(uri.token.as_deref(), Some("My Token"));
        assert_eq!(uri.slot_id, Some(1));
        assert_eq!(uri.id.as_deref(), Some(&[0x4a, 0x8d][..]));
        assert_eq!(uri.object.as_deref(), Some("release"));
        assert_eq!(
            uri.module_path.as_deref(),
            Some(std::path::Path::new("/usr/lib/softhsm/libsofthsm2.so"))
        );
        assert_eq!(uri.pin_value.as_deref().map(String::as_str), Some("1234"));
        assert!(
            !uri.display_name().contains("1234"),
            "{}",
            uri.display_name()
        );
        assert!(uri.display_name().contains("pin-value=<redacted>"));
    }

    #[test]
    fn pin_source_takes_a_file_uri_or_a_path() {
        let uri = Pkcs11Uri::parse("pkcs11:object=k?pin-source=file:/run/pin").unwrap();
        assert_eq!(
            uri.pin_source.as_deref(),
            Some(std::path::Path::new("/run/pin"))
        );
        let uri = Pkcs11Uri::parse("pkcs11:object=k?pin-source=/run/pin").unwrap();
        assert_eq!(
            uri.pin_source.as_deref(),
            Some(std::path::Path::new("/run/pin"))
        );
    }

    #[rstest]
    #[case("pkcs11:token=a;token=b", "twice")]
    #[case("pkcs11:slot-id=one", "slot-id")]
    #[case("pkcs11:id=%4", "percent escape")]
    #[case("pkcs11:library-version=1", "path attribute 1: unsupported")]
    #[case("pkcs11:object=k;pin-value=1", "pin-value is a query attribute")]
    #[case("pkcs11:object=k?id=01", "id is a path attribute")]
    #[case("pkcs11:type=cert", "type=cert")]
    #[case("pkcs11:object=k?module-name=softhsm2", "module-path")]
    #[case("pkcs11:object=k?pin-value=1&pin-source=/f", "both")]
    #[case("pkcs11:object", "no '='")]
    fn bad_uris_name_the_attribute(#[case] text: &str, #[case] needle: &str) {
        let err = Pkcs11Uri::parse(text).unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
    }

    #[rstest]
    #[case(
        "pkcs11:object=k?pin-value=1234",
        "pkcs11:object=k?pin-value=<redacted>"
    )]
    #[case(
        "pkcs11:object=k;pin-value=1234;id=01",
        "pkcs11:object=k;pin-value=<redacted>;id=01"
    )]
    #[case(
        "pkcs11:object=k?pin-value=12&module-path=/m.so&pin-value=34",
        "pkcs11:object=k?pin-value=<redacted>&module-path=/m.so&pin-value=<redacted>"
    )]
    #[case("pkcs11:object=k", "pkcs11:object=k")]
    #[case(
        "pkcs11:object=k?PIN-VALUE=1234",
        "pkcs11:object=k?PIN-VALUE=<redacted>"
    )]
    #[case(
        "pkcs11:object=k?pin%2Dvalue=1234",
        "pkcs11:object=k?pin%2Dvalue=<redacted>"
    )]
    #[case(
        "pkcs11:object=k?pin-value=12&34&module-path=/m.so",
        "pkcs11:object=k?pin-value=<redacted>&<redacted>&module-path=/m.so"
    )]
    #[case(
        "pkcs11:object=k?pin-value=12&34=56",
        "pkcs11:object=k?pin-value=<redacted>&<redacted>"
    )]
    #[case(
        "pkcs11:object=k;12;pin-value=9",
        "pkcs11:object=k;<redacted>;pin-value=<redacted>"
    )]
    #[case("not-a-uri pin-value=1234", "<redacted>")]
    fn the_pin_is_redacted_wherever_it_is(#[case] text: &str, #[case] shown: &str) {
        assert_eq!(redact(text), shown);
    }

    #[test]
    fn errors_never_echo_the_pin() {
        let err = Pkcs11Uri::parse("pkcs11:object=k;pin-value=s3cr3t-pin")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cr3t-pin"), "{err}");
        let err = Pkcs11Uri::parse("pkcs11:bogus=1?pin-value=s3cr3t-pin")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cr3t-pin"), "{err}");
        let err = Pkcs11Uri::parse("pkcs11:object=k?pin-value=%zz")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("%zz"), "{err}");
    }

    #[rstest]
    #[case::upper_case("pkcs11:object=k?PIN-VALUE=s3cr3t")]
    #[case::encoded_name("pkcs11:object=k?pin%2Dvalue=s3cr3t")]
    #[case::mixed("pkcs11:object=k?Pin%2dValue=s3cr3t")]
    fn the_pin_is_the_pin_however_its_name_is_spelt(#[case] text: &str) {
        let uri = Pkcs11Uri::parse(text).unwrap();
        assert_eq!(uri.pin_value.as_deref().map(String::as_str), Some("s3cr3t"));
        assert!(
            !uri.display_name().contains("s3cr3t"),
            "{}",
            uri.display_name()
        );
    }

    #[rstest]
    #[case::unencoded_ampersand("pkcs11:object=k?pin-value=s3cr&Xq9tail", "Xq9tail")]
    #[case::ampersand_then_equals("pkcs11:object=k?pin-value=s3cr&Xq9=tail", "Xq9")]
    #[case::unencoded_semicolon_in_path("pkcs11:object=k;pin-value=s3cr;Xq9tail", "Xq9tail")]
    #[case::unknown_query_name("pkcs11:object=k?Xq9tail=1&pin-value=s3cr", "Xq9tail")]
    #[case::twice("pkcs11:object=k?pin-value=s3cr&PIN-VALUE=Xq9tail", "Xq9tail")]
    #[case::a_path_name_after_the_ampersand(
        "pkcs11:object=k?pin-value=s3cr&object=Xq9tail",
        "Xq9tail"
    )]
    fn no_part_of_a_split_pin_reaches_an_error(#[case] text: &str, #[case] fragment: &str) {
        let err = Pkcs11Uri::parse(text).unwrap_err().to_string();
        assert!(!err.contains(fragment), "{err}");
        assert!(!err.contains("s3cr"), "{err}");
    }
}
