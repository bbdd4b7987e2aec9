//! `Content-Encoding` undone within a byte bound, so a small compressed
//! body cannot become a large one (a zip bomb stops at the bound).

use std::io::Read;

pub enum Decoded<'a> {
    Plain(std::borrow::Cow<'a, [u8]>),
    TooLarge,
    Failed,
}

/// Undo `Content-Encoding` (gzip, deflate, br; several in order), never
/// producing more than `limit` bytes: a zip bomb stops at the limit.
pub fn decode<'a>(body: &'a [u8], encoding: Option<&str>, limit: usize) -> Decoded<'a> {
    // Most error bodies come unencoded: nothing to split or collect.
    let Some(encoding) = encoding else {
        return Decoded::Plain(body.into());
    };
    let codings: Vec<String> = encoding
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    if codings.is_empty() || body.is_empty() {
        return Decoded::Plain(body.into());
    }
    let mut data: Vec<u8> = body.to_vec();
    for coding in codings.iter().rev() {
        let out = match coding.as_str() {
            "gzip" | "x-gzip" => read_bounded(flate2::read::MultiGzDecoder::new(&data[..]), limit),
            "deflate" => read_bounded(flate2::read::ZlibDecoder::new(&data[..]), limit)
                .or_else(|_| read_bounded(flate2::read::DeflateDecoder::new(&data[..]), limit)),
            "br" => read_bounded(brotli::Decompressor::new(&data[..], 4096), limit),
            _ => return Decoded::Failed,
        };
        match out {
            Ok(Some(d)) => data = d,
            Ok(None) => return Decoded::TooLarge,
            Err(()) => return Decoded::Failed,
        }
    }
    Decoded::Plain(data.into())
}

/// Read at most `limit` bytes; `Ok(None)` if there was more.
fn read_bounded(r: impl Read, limit: usize) -> Result<Option<Vec<u8>>, ()> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    r.take(cap).read_to_end(&mut out).map_err(|_| ())?;
    if out.len() > limit {
        Ok(None)
    } else {
        Ok(Some(out))
    }
}
