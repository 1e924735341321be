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
    /// PIN.
    pub fn parse(text: &str) -> Result<Pkcs11Uri, KeyError> {
        let display = redact(text);
        let malformed = |detail: String| KeyError::Malformed {
            key: display.clone(),
            detail,
        };
        if text.len() > MAX_URI_LEN {
            return Err(malformed(format!("longer than {MAX_URI_LEN} bytes")));
        }
        let rest = text
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("pkcs11:"))
            .map(|_| &text[7..])
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
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, raw) = attr
                .split_once('=')
                .ok_or_else(|| malformed(format!("path attribute {attr:?} has no '='")))?;
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
                        "unsupported path attribute {other:?} (imgate reads token, manufacturer, \
                         model, serial, slot-id, object, id and type)"
                    )))
                }
            };
            let value = text_value()?;
            set_once(slot, value, name).map_err(&malformed)?;
        }
        for attr in query.split('&').filter(|a| !a.is_empty()) {
            let (name, raw) = attr
                .split_once('=')
                .ok_or_else(|| malformed(format!("query attribute {attr:?} has no '='")))?;
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
                        "unsupported query attribute {other:?} (imgate reads module-path, \
                         pin-value and pin-source)"
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

/// `text` with the value of every `pin-value` attribute replaced, so the
/// URI can be printed. Works on unparsable input too (errors use it), and
/// wherever the attribute was put, path or query.
pub(crate) fn redact(text: &str) -> String {
    const ATTR: &str = "pin-value=";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(ATTR) {
        let value_start = at + ATTR.len();
        out.push_str(&rest[..value_start]);
        out.push_str(REDACTED);
        let value_len = rest[value_start..]
            .find([';', '&', '?'])
            .unwrap_or(rest.len() - value_start);
        rest = &rest[value_start + value_len..];
    }
    out.push_str(rest);
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
    #[case("pkcs11:library-version=1", "library-version")]
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
}
