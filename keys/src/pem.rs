//! A small, tolerant PEM reader and a strict writer.
//!
//! Key files come from many hands (cosign, openssl, CI secret stores that
//! re-wrap lines or add CRLF), so reading accepts any line width, CRLF,
//! surrounding text and trailing whitespace; it only needs one
//! `-----BEGIN X-----` … `-----END X-----` block with base64 inside.
//! Writing produces what Go's `encoding/pem` writes (64-column lines, LF,
//! a final newline), the form cosign itself emits.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use zeroize::Zeroizing;

/// Width of the base64 lines Go's `encoding/pem` writes.
const LINE_WIDTH: usize = 64;
const BEGIN: &str = "-----BEGIN ";
const END: &str = "-----END ";
const DASHES: &str = "-----";

/// One decoded PEM block. The body is zeroized on drop because it may hold
/// (encrypted or plain) private key material.
#[derive(Debug)]
pub(crate) struct Block {
    pub(crate) label: String,
    pub(crate) body: Zeroizing<Vec<u8>>,
}

/// Why a PEM block could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PemError {
    NoBlock,
    Unterminated(String),
    Base64(String),
}

impl std::fmt::Display for PemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PemError::NoBlock => write!(f, "no PEM block (-----BEGIN ...-----) found"),
            PemError::Unterminated(label) => {
                write!(
                    f,
                    "PEM block {label} has no matching -----END {label}----- line"
                )
            }
            PemError::Base64(detail) => write!(f, "PEM body is not valid base64: {detail}"),
        }
    }
}

/// Reads the label of the first PEM block without decoding its body.
pub(crate) fn first_label(input: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(input);
    let start = text.find(BEGIN)? + BEGIN.len();
    let rest = &text[start..];
    let end = rest.find(DASHES)?;
    Some(rest[..end].trim().to_string())
}

/// Decodes the first PEM block in `input`.
pub(crate) fn decode(input: &[u8]) -> Result<Block, PemError> {
    let text = String::from_utf8_lossy(input);
    let begin = text.find(BEGIN).ok_or(PemError::NoBlock)?;
    let after_begin = &text[begin + BEGIN.len()..];
    let label_end = after_begin.find(DASHES).ok_or(PemError::NoBlock)?;
    let label = after_begin[..label_end].trim().to_string();
    let body_and_rest = &after_begin[label_end + DASHES.len()..];
    let end_marker = format!("{END}{label}{DASHES}");
    let body_end = body_and_rest
        .find(&end_marker)
        .ok_or_else(|| PemError::Unterminated(label.clone()))?;
    let body_text = &body_and_rest[..body_end];
    // RFC 1421 style headers ("Proc-Type: ...") are not part of the base64;
    // skip any line with a colon. Key files made by cosign have none.
    let mut b64 = Zeroizing::new(String::with_capacity(body_text.len()));
    for line in body_text.lines().filter(|line| !line.contains(':')) {
        b64.extend(line.chars().filter(|c| !c.is_whitespace()));
    }
    let mut body = Zeroizing::new(Vec::with_capacity(b64.len() / 4 * 3 + 3));
    STANDARD
        .decode_vec(b64.as_bytes(), &mut body)
        .map_err(|e| PemError::Base64(e.to_string()))?;
    Ok(Block { label, body })
}

/// Encodes `body` as a PEM block the way Go's `encoding/pem` does.
pub(crate) fn encode(label: &str, body: &[u8]) -> String {
    let b64 = Zeroizing::new(STANDARD.encode(body));
    let mut out = String::with_capacity(b64.len() + b64.len() / LINE_WIDTH + 2 * label.len() + 40);
    out.push_str(BEGIN);
    out.push_str(label);
    out.push_str(DASHES);
    out.push('\n');
    // base64 output is ASCII, so byte chunks are valid UTF-8 boundaries.
    for chunk in b64.as_bytes().chunks(LINE_WIDTH) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(END);
    out.push_str(label);
    out.push_str(DASHES);
    out.push('\n');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_wraps_at_64_columns() {
        let body: Vec<u8> = (0u8..=200).collect();
        let pem = encode("PUBLIC KEY", &body);
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert!(pem.ends_with("-----END PUBLIC KEY-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64 || l.starts_with("-----")));
        let block = decode(pem.as_bytes()).unwrap();
        assert_eq!(block.label, "PUBLIC KEY");
        assert_eq!(&*block.body, &body);
    }

    #[test]
    fn tolerates_crlf_odd_widths_and_surrounding_text() {
        let body = b"some key bytes, long enough to wrap a line or two............";
        let b64 = STANDARD.encode(body);
        let (a, b) = b64.split_at(10);
        let text = format!(
            "junk before\r\n-----BEGIN X-----\r\n{a}\r\n  {b}  \r\n-----END X-----\r\ntrailer"
        );
        let block = decode(text.as_bytes()).unwrap();
        assert_eq!(block.label, "X");
        assert_eq!(&*block.body, body);
        assert_eq!(first_label(text.as_bytes()).as_deref(), Some("X"));
    }

    #[test]
    fn reports_missing_block_end_and_bad_base64() {
        assert_eq!(decode(b"hello").unwrap_err(), PemError::NoBlock);
        assert_eq!(
            decode(b"-----BEGIN A-----\nAAAA\n-----END B-----\n").unwrap_err(),
            PemError::Unterminated("A".into())
        );
        assert!(matches!(
            decode(b"-----BEGIN A-----\n!!!!\n-----END A-----\n").unwrap_err(),
            PemError::Base64(_)
        ));
    }
}
