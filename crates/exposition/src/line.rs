//! Lexing one line of the text format into a [`Line`], and reading back a
//! label block that lexing has already validated.

use std::borrow::Cow;
use std::ops::Range;

use super::ErrorKind;

/// What one line holds; everything borrows from the line.
#[derive(Debug, PartialEq)]
pub(super) enum Line<'a> {
    Blank,
    Comment,
    Help,
    Type { name: &'a str, type_text: &'a str },
    Sample { name: &'a str, raw_labels: &'a str, series: &'a str, value: f64, timestamp_ms: Option<i64> },
}

type Result<T> = std::result::Result<T, ErrorKind>;

struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn skip_blanks(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
        self.pos > start
    }

    fn take_while(&mut self, keep: impl Fn(usize, u8) -> bool) -> &'a str {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if !keep(self.pos - start, b) {
                break;
            }
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }

    fn token(&mut self) -> &'a str {
        self.take_while(|_, b| b != b' ' && b != b'\t')
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.pos += 1;
        }
        found
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }
}

fn is_metric_name_char(index: usize, b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':' || (index > 0 && b.is_ascii_digit())
}

fn is_label_name_char(index: usize, b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || (index > 0 && b.is_ascii_digit())
}

/// Lexes one line (without its newline).
pub(super) fn parse_line(line: &str) -> Result<Line<'_>> {
    let mut cursor = Cursor { text: line, pos: 0 };
    let indented = cursor.skip_blanks();
    match cursor.peek() {
        None => Ok(Line::Blank),
        Some(b'#') => {
            cursor.pos += 1;
            comment(cursor)
        }
        // Prometheus's lexer rejects it too.
        Some(_) if indented => Err(ErrorKind::Syntax("a sample line must not start with a blank")),
        Some(_) => sample(cursor),
    }
}

fn comment(mut cursor: Cursor<'_>) -> Result<Line<'_>> {
    cursor.skip_blanks();
    let keyword = cursor.token();
    if !matches!(keyword, "HELP" | "TYPE") || !cursor.skip_blanks() {
        return Ok(Line::Comment);
    }
    let name = cursor.take_while(is_metric_name_char);
    if name.is_empty() {
        return Err(ErrorKind::Syntax(if keyword == "HELP" {
            "expected metric name after HELP"
        } else {
            "expected metric name after TYPE"
        }));
    }
    if keyword == "HELP" {
        // The docstring is free text; it need not be read.
        return if cursor.at_end() || cursor.skip_blanks() {
            Ok(Line::Help)
        } else {
            Err(ErrorKind::Syntax("expected a space after the metric name in HELP"))
        };
    }
    cursor.skip_blanks();
    let type_text = cursor.token();
    cursor.skip_blanks();
    if type_text.is_empty() || !cursor.at_end() {
        return Err(ErrorKind::Syntax("expected exactly one metric type after the metric name in TYPE"));
    }
    Ok(Line::Type { name, type_text })
}

fn sample(mut cursor: Cursor<'_>) -> Result<Line<'_>> {
    let name = cursor.take_while(is_metric_name_char);
    if name.is_empty() {
        return Err(ErrorKind::Syntax("expected a metric name"));
    }
    let name_end = cursor.pos;
    cursor.skip_blanks();
    let raw_labels = if cursor.eat(b'{') {
        label_block(&mut cursor)?
    } else {
        cursor.pos = name_end;
        ""
    };
    let series = &cursor.text[..cursor.pos];
    let (value, timestamp_ms) = value_and_timestamp(cursor)?;
    Ok(Line::Sample { name, raw_labels, series, value, timestamp_ms })
}

/// A sample line whose series text is `known` (lexed and checked in an
/// earlier payload): only its value and timestamp are read. `None` when the
/// line is not that series followed by a blank, or its value or timestamp is
/// not valid: the full lexer then reads the line and says what is wrong.
pub(super) fn known_sample<'a>(line: &'a str, known: &str, name_len: usize, labels: Range<usize>) -> Option<Line<'a>> {
    if !line.starts_with(known) || !matches!(line.as_bytes().get(known.len()), Some(b' ' | b'\t')) {
        return None;
    }
    let (value, timestamp_ms) = value_and_timestamp(Cursor { text: line, pos: known.len() }).ok()?;
    Some(Line::Sample {
        name: &line[..name_len],
        raw_labels: &line[labels],
        series: &line[..known.len()],
        value,
        timestamp_ms,
    })
}

/// What follows a sample's series: blanks, the value, and an optional timestamp.
fn value_and_timestamp(mut cursor: Cursor<'_>) -> Result<(f64, Option<i64>)> {
    cursor.skip_blanks();
    let value_text = cursor.token();
    if value_text.is_empty() {
        return Err(ErrorKind::Syntax("expected a value after the metric"));
    }
    let value = parse_value(value_text)?;
    cursor.skip_blanks();
    if cursor.at_end() {
        return Ok((value, None));
    }
    let text = cursor.token();
    let invalid = || ErrorKind::Number { what: "timestamp", text: text.into() };
    // Digits only, as Prometheus's lexer reads them: no sign.
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let ts = text.parse::<i64>().map_err(|_| invalid())?;
    cursor.skip_blanks();
    if !cursor.at_end() {
        return Err(ErrorKind::Syntax("expected the end of the line after the timestamp"));
    }
    Ok((value, Some(ts)))
}

/// Validates `name="value", ...}` and returns the text between the braces.
fn label_block<'a>(cursor: &mut Cursor<'a>) -> Result<&'a str> {
    let start = cursor.pos;
    loop {
        cursor.skip_blanks();
        if cursor.eat(b'}') {
            return Ok(&cursor.text[start..cursor.pos - 1]);
        }
        if cursor.take_while(is_label_name_char).is_empty() {
            return Err(ErrorKind::Syntax("expected a label name"));
        }
        cursor.skip_blanks();
        if !cursor.eat(b'=') {
            return Err(ErrorKind::Syntax("expected '=' after the label name"));
        }
        cursor.skip_blanks();
        if !cursor.eat(b'"') {
            return Err(ErrorKind::Syntax("expected a double-quoted label value"));
        }
        skip_quoted(cursor)?;
        cursor.skip_blanks();
        if cursor.eat(b',') {
            continue;
        }
        if cursor.peek() != Some(b'}') {
            return Err(ErrorKind::Syntax("expected ',' or '}' after the label value"));
        }
    }
}

/// Moves past a label value's closing quote, honouring backslash escapes.
fn skip_quoted(cursor: &mut Cursor<'_>) -> Result<()> {
    loop {
        match cursor.peek() {
            None => return Err(ErrorKind::Syntax("unterminated label value")),
            Some(b'\\') => {
                cursor.pos += 1;
                // Step over the escaped character whole, even if multi-byte.
                let next = cursor.rest().chars().next().ok_or(ErrorKind::Syntax("unterminated label value"))?;
                cursor.pos += next.len_utf8();
            }
            Some(b'"') => {
                cursor.pos += 1;
                return Ok(());
            }
            Some(_) => cursor.pos += 1,
        }
    }
}

fn parse_value(text: &str) -> Result<f64> {
    let invalid = || ErrorKind::Number { what: "value", text: text.into() };
    // Go's ParseFloat (which Prometheus uses) and Rust's agree on decimal,
    // exponent, NaN and Inf spellings; underscores and hex floats are refused
    // by both. Where they differ: a finite literal beyond f64's range is
    // ±Inf to Rust and an error (ErrRange) to Go, so Prometheus rejects it.
    let value = text.parse::<f64>().map_err(|_| invalid())?;
    if value.is_infinite() && !text.bytes().any(|b| b == b'i' || b == b'I') {
        return Err(ErrorKind::Number { what: "value (out of range)", text: text.into() });
    }
    Ok(value)
}

/// Iterates over a validated label block: `(name, raw value without quotes)`.
pub(super) struct LabelPairs<'a> {
    cursor: Cursor<'a>,
}

impl<'a> LabelPairs<'a> {
    pub(super) fn new(raw_labels: &'a str) -> Self {
        Self { cursor: Cursor { text: raw_labels, pos: 0 } }
    }
}

impl<'a> Iterator for LabelPairs<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let cursor = &mut self.cursor;
        cursor.skip_blanks();
        let name = cursor.take_while(is_label_name_char);
        if name.is_empty() {
            return None;
        }
        cursor.skip_blanks();
        cursor.eat(b'=');
        cursor.skip_blanks();
        cursor.eat(b'"');
        let start = cursor.pos;
        skip_quoted(cursor).ok()?;
        let raw = &cursor.text[start..cursor.pos - 1];
        cursor.skip_blanks();
        cursor.eat(b',');
        Some((name, raw))
    }
}

/// Undoes the format's escapes: `\\`, `\"` and `\n`. Other backslash pairs
/// stay as written, as in Prometheus.
pub(super) fn unescape(raw: &str) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some('n') => out.push('\n'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}
