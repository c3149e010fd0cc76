//! Turning an HTTP body into payload text: gzip decoding and UTF-8 checking,
//! both bounded by `body_size_limit` (which applies to the decoded size).

use std::io::Read;

use flate2::read::MultiGzDecoder;

/// Why a body cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The (decoded) body exceeds `body_size_limit`.
    #[error("body size limit exceeded (more than {limit} bytes{})", if *.decoded { " after decompression" } else { "" })]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
        /// Whether the limit was hit while decompressing.
        decoded: bool,
    },
    /// The gzip stream is corrupt.
    #[error("invalid gzip body: {0}")]
    Gzip(std::io::Error),
    /// A `Content-Encoding` other than gzip or identity.
    #[error("unsupported Content-Encoding {0:?}")]
    UnsupportedEncoding(String),
    /// The text is not UTF-8.
    #[error("body is not valid UTF-8 (line {line})")]
    Utf8 {
        /// 1-based line of the first invalid byte.
        line: usize,
    },
}

/// Decodes `raw` according to `content_encoding` and checks it is UTF-8 text
/// of at most `limit` bytes (0: no limit).
///
/// # Errors
/// [`BodyError`] when the body is too large, corrupt, of an unknown encoding,
/// or not UTF-8.
pub fn decode_body(raw: Vec<u8>, content_encoding: Option<&str>, limit: usize) -> Result<String, BodyError> {
    let encoding = content_encoding.map(str::trim).unwrap_or("").to_ascii_lowercase();
    let bytes = match encoding.as_str() {
        "" | "identity" => {
            if limit > 0 && raw.len() > limit {
                return Err(BodyError::TooLarge { limit, decoded: false });
            }
            raw
        }
        "gzip" | "x-gzip" => gunzip(&raw, limit)?,
        other => return Err(BodyError::UnsupportedEncoding(other.to_string())),
    };
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..valid].iter().filter(|&&b| b == b'\n').count();
        BodyError::Utf8 { line }
    })
}

fn gunzip(raw: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::with_capacity(raw.len().saturating_mul(6).min(if limit > 0 { limit } else { usize::MAX }));
    let decoder = MultiGzDecoder::new(raw);
    // Read one byte past the limit to tell "exactly at" from "over".
    let cap = if limit > 0 { limit as u64 + 1 } else { u64::MAX };
    decoder.take(cap).read_to_end(&mut out).map_err(BodyError::Gzip)?;
    if limit > 0 && out.len() > limit {
        return Err(BodyError::TooLarge { limit, decoded: true });
    }
    Ok(out)
}
