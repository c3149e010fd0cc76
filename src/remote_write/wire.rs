//! The remote-write 1.0 wire format: a protobuf `WriteRequest`
//! (`prompb/remote.proto`, `types.proto`), snappy block-compressed.
//!
//! Hand-encoded: the messages are four fields deep and fixed, so a protobuf
//! code generator (and `protoc` in CI) would add more than it saves. A
//! series' labels are encoded once, when the series is first seen, and
//! copied into every request that carries it.
//!
//! ```text
//! WriteRequest { repeated TimeSeries timeseries = 1; }
//! TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
//! Label        { string name = 1; string value = 2; }
//! Sample       { double value = 1; int64 timestamp = 2; }  // milliseconds
//! ```

/// Prometheus's stale marker: the NaN a series ends with (`value.StaleNaN`).
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// The stale marker as an `f64`.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN)
}

/// Whether `value` is the stale marker (bit for bit: other NaNs are values).
pub fn is_stale_nan(value: f64) -> bool {
    value.to_bits() == STALE_NAN
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn varint_len(mut value: u64) -> usize {
    let mut n = 1;
    while value >= 0x80 {
        value >>= 7;
        n += 1;
    }
    n
}

fn put_bytes_field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The encoded `labels` fields of a `TimeSeries`; `labels` must be sorted
/// by name (receivers such as Mimir and newer Prometheus versions reject
/// unsorted sets).
pub fn encode_labels<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut label = Vec::new();
    for (name, value) in labels {
        label.clear();
        put_bytes_field(&mut label, 0x0a, name.as_bytes());
        put_bytes_field(&mut label, 0x12, value.as_bytes());
        put_bytes_field(&mut out, 0x0a, &label);
    }
    out
}

/// Builds one `WriteRequest` body, series by series.
#[derive(Debug, Default)]
pub struct RequestBuilder {
    body: Vec<u8>,
    series: usize,
}

impl RequestBuilder {
    /// Adds a `TimeSeries` of one sample: `labels` from [`encode_labels`],
    /// `timestamp` in milliseconds.
    pub fn push(&mut self, labels: &[u8], value: f64, timestamp: i64) {
        // Sample: 0x09 + 8 bytes of double, 0x10 + varint timestamp.
        let sample_len = 1 + 8 + 1 + varint_len(timestamp as u64);
        let series_len = labels.len() + 1 + varint_len(sample_len as u64) + sample_len;
        self.body.push(0x0a);
        put_varint(&mut self.body, series_len as u64);
        self.body.extend_from_slice(labels);
        self.body.push(0x12);
        put_varint(&mut self.body, sample_len as u64);
        self.body.push(0x09);
        self.body.extend_from_slice(&value.to_le_bytes());
        self.body.push(0x10);
        put_varint(&mut self.body, timestamp as u64);
        self.series += 1;
    }

    /// Series added.
    pub fn len(&self) -> usize {
        self.series
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.series == 0
    }

    /// The uncompressed protobuf.
    pub fn protobuf(&self) -> &[u8] {
        &self.body
    }

    /// The request body: the protobuf, snappy block-compressed.
    pub fn finish(&self) -> Vec<u8> {
        // Only fails on inputs over 2^32 bytes; a request is far smaller
        // (max_samples_per_send series).
        snap::raw::Encoder::new().compress_vec(&self.body).unwrap_or_default()
    }
}

/// One decoded time series: labels in wire order, samples as (ms, value).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedSeries {
    /// Label pairs.
    pub labels: Vec<(String, String)>,
    /// (timestamp ms, value) pairs.
    pub samples: Vec<(i64, f64)>,
}

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Not snappy.
    #[error("not a snappy block: {0}")]
    Snappy(String),
    /// Not the protobuf expected.
    #[error("malformed WriteRequest at byte {0}")]
    Protobuf(usize),
}

/// Decodes a snappy-compressed `WriteRequest` (tests and the bench receiver).
///
/// # Errors
/// [`DecodeError`] on a body that is not snappy or not a `WriteRequest`.
pub fn decode(body: &[u8]) -> Result<Vec<DecodedSeries>, DecodeError> {
    let raw = snap::raw::Decoder::new().decompress_vec(body).map_err(|e| DecodeError::Snappy(e.to_string()))?;
    let mut series = Vec::new();
    for (field, bytes) in Fields::new(&raw) {
        let bytes = bytes?;
        if field == 1 {
            series.push(decode_series(bytes)?);
        }
    }
    Ok(series)
}

fn decode_series(raw: &[u8]) -> Result<DecodedSeries, DecodeError> {
    let mut out = DecodedSeries { labels: Vec::new(), samples: Vec::new() };
    for (field, bytes) in Fields::new(raw) {
        let bytes = bytes?;
        match field {
            1 => {
                let (mut name, mut value) = (String::new(), String::new());
                for (f, b) in Fields::new(bytes) {
                    let text = String::from_utf8_lossy(b?).into_owned();
                    if f == 1 { name = text } else { value = text }
                }
                out.labels.push((name, value));
            }
            2 => out.samples.push(decode_sample(bytes)?),
            _ => {}
        }
    }
    Ok(out)
}

fn decode_sample(raw: &[u8]) -> Result<(i64, f64), DecodeError> {
    let (mut value, mut timestamp, mut at) = (0.0, 0i64, 0);
    while at < raw.len() {
        let tag = raw[at];
        at += 1;
        match tag {
            0x09 => {
                let bytes: [u8; 8] =
                    raw.get(at..at + 8).and_then(|b| b.try_into().ok()).ok_or(DecodeError::Protobuf(at))?;
                value = f64::from_le_bytes(bytes);
                at += 8;
            }
            0x10 => {
                let (v, n) = read_varint(&raw[at..]).ok_or(DecodeError::Protobuf(at))?;
                timestamp = v as i64;
                at += n;
            }
            _ => return Err(DecodeError::Protobuf(at)),
        }
    }
    Ok((timestamp, value))
}

fn read_varint(raw: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in raw.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// The length-delimited fields of a message: (field number, bytes).
struct Fields<'a> {
    raw: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    fn new(raw: &'a [u8]) -> Self {
        Self { raw, at: 0 }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = (u64, Result<&'a [u8], DecodeError>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.raw.len() {
            return None;
        }
        let start = self.at;
        let failed = |at| Some((0, Err(DecodeError::Protobuf(at))));
        let Some((key, n)) = read_varint(&self.raw[self.at..]) else { return failed(start) };
        self.at += n;
        if key & 7 != 2 {
            self.at = self.raw.len();
            return failed(start);
        }
        let Some((len, n)) = read_varint(&self.raw[self.at..]) else { return failed(start) };
        self.at += n;
        let end = self.at.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
        let Some(bytes) = self.raw.get(self.at..end) else {
            self.at = self.raw.len();
            return failed(start);
        };
        self.at = end;
        Some((key >> 3, Ok(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips_and_matches_a_known_encoding() {
        let labels = encode_labels([("__name__", "up"), ("job", "a")]);
        let mut request = RequestBuilder::default();
        request.push(&labels, 1.0, 1_700_000_000_000);
        request.push(&labels, stale_nan(), -5);
        // The first TimeSeries, byte for byte as protoc-generated code writes it.
        let expected_label =
            [0x0a, 0x0e, 0x0a, 0x08, b'_', b'_', b'n', b'a', b'm', b'e', b'_', b'_', 0x12, 0x02, b'u', b'p'];
        assert_eq!(&request.protobuf()[2..2 + expected_label.len()], &expected_label);
        let decoded = decode(&request.finish()).unwrap();
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded[0].labels, [("__name__".into(), "up".into()), ("job".into(), "a".into())]);
        assert_eq!(decoded[0].samples, [(1_700_000_000_000, 1.0)]);
        assert_eq!(decoded[1].samples[0].0, -5, "negative timestamps are ten-byte varints");
        assert!(is_stale_nan(decoded[1].samples[0].1));
        assert!(!is_stale_nan(f64::NAN), "an ordinary NaN is a value, not a marker");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(decode(b"not snappy at all"), Err(DecodeError::Snappy(_)) | Err(DecodeError::Protobuf(_))));
        let bad = snap::raw::Encoder::new().compress_vec(&[0x0a, 0xff, 0x01]).unwrap();
        assert_eq!(decode(&bad), Err(DecodeError::Protobuf(0)));
    }
}
