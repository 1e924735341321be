//! Just enough DER to write RFC 3161 timestamp tokens (CMS SignedData) and
//! read what the harness's services are sent: tag-length-value writing and
//! reading, object identifiers, integers, times.

use anyhow::Context;

/// A DER element: tag, length, `content`.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// A SEQUENCE of `parts`.
pub(crate) fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// A SET OF `parts`, sorted by their encodings as DER requires.
pub(crate) fn set(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut sorted = parts.to_vec();
    sorted.sort();
    tlv(0x31, &sorted.concat())
}

/// An OBJECT IDENTIFIER.
pub(crate) fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = Vec::new();
    let first = arcs.first().copied().unwrap_or(0) * 40 + arcs.get(1).copied().unwrap_or(0);
    for arc in std::iter::once(first).chain(arcs.iter().skip(2).copied()) {
        let mut chunk = vec![(arc & 0x7f) as u8];
        let mut rest = arc >> 7;
        while rest > 0 {
            chunk.push(0x80 | (rest & 0x7f) as u8);
            rest >>= 7;
        }
        chunk.reverse();
        body.extend(chunk);
    }
    tlv(0x06, &body)
}

/// A non-negative INTEGER from big-endian bytes (minimal form).
pub(crate) fn uint(bytes: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    let mut content = if trimmed.is_empty() { vec![0] } else { trimmed };
    if content[0] & 0x80 != 0 {
        content.insert(0, 0);
    }
    tlv(0x02, &content)
}

/// A GeneralizedTime `YYYYMMDDHHMMSSZ` for Unix `seconds`.
pub(crate) fn generalized_time(seconds: i64) -> anyhow::Result<Vec<u8>> {
    let t = time::OffsetDateTime::from_unix_timestamp(seconds).context("timestamp out of range")?;
    let text = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    Ok(tlv(0x18, text.as_bytes()))
}

/// One element read: its tag, the whole element, its content, and the rest.
pub(crate) struct Element<'a> {
    pub tag: u8,
    pub whole: &'a [u8],
    pub content: &'a [u8],
    pub rest: &'a [u8],
}

/// Read the first element of `der`.
pub(crate) fn read(der: &[u8]) -> anyhow::Result<Element<'_>> {
    let tag = *der.first().context("empty DER")?;
    let first = *der.get(1).context("truncated DER")?;
    let (header, len) = if first < 0x80 {
        (2, usize::from(first))
    } else {
        let n = usize::from(first & 0x7f);
        anyhow::ensure!((1..=4).contains(&n), "unsupported DER length");
        let bytes = der.get(2..2 + n).context("truncated DER")?;
        (
            2 + n,
            bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)),
        )
    };
    let end = header + len;
    anyhow::ensure!(der.len() >= end, "truncated DER");
    Ok(Element {
        tag,
        whole: &der[..end],
        content: &der[header..end],
        rest: &der[end..],
    })
}

/// The elements inside a constructed element's content.
pub(crate) fn children(mut content: &[u8]) -> anyhow::Result<Vec<Element<'_>>> {
    let mut out = Vec::new();
    while !content.is_empty() {
        let element = read(content)?;
        content = element.rest;
        out.push(element);
    }
    Ok(out)
}

/// A certificate's issuer Name and serialNumber (both whole DER elements),
/// for a CMS `IssuerAndSerialNumber`.
pub(crate) fn issuer_and_serial(cert_der: &[u8]) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let cert = read(cert_der)?;
    let tbs = read(cert.content)?;
    let fields = children(tbs.content)?;
    // [0] version is present in every v3 certificate rcgen writes.
    let skip = usize::from(fields.first().is_some_and(|f| f.tag == 0xa0));
    let serial = fields.get(skip).context("certificate without serial")?;
    let issuer = fields.get(skip + 2).context("certificate without issuer")?;
    Ok((issuer.whole.to_vec(), serial.whole.to_vec()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn known_encodings() {
        assert_eq!(
            oid(&[2, 16, 840, 1, 101, 3, 4, 2, 1]),
            hex::decode("0609608648016503040201").unwrap()
        );
        assert_eq!(uint(&[0x80]), vec![0x02, 0x02, 0x00, 0x80]);
        assert_eq!(uint(&[0, 0, 5]), vec![0x02, 0x01, 0x05]);
        assert_eq!(generalized_time(0).unwrap()[2..], *b"19700101000000Z");
        let long = tlv(0x04, &[0u8; 300]);
        let e = read(&long).unwrap();
        assert_eq!((e.tag, e.content.len(), e.rest.len()), (0x04, 300, 0));
    }
}
