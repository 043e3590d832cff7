//! InfluxDB v2 line protocol (`POST /api/v2/write`, what Telegraf's `influxdb_v2` output
//! sends), turned into [`LinePoint`]s.
//!
//! `measurement[,tag=value...] field=value[,field=value...] [timestamp]`, one point per
//! line; `#` starts a comment line; blank lines and CRLF line ends are fine. The device of
//! a point is its `device` tag, else the measurement; each numeric or boolean field is a
//! series. String fields cannot be stored as numbers: they are skipped and reported in
//! [`LineBatch::skipped`], because Telegraf's inputs often carry one next to the numbers
//! and failing whole requests for them would lose everything else.
//!
//! The parser is one pass over the bytes with a lookup table per name kind, and borrows
//! every name without escapes from the body: no allocation per point but the `Vec` growth.
//! [`parse_line_protocol_each`] hands the points to a closure instead of collecting them,
//! so a caller can put them straight where they go (the platform's write batch).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use fleetwire_store::{MAX_NAME_LEN, Point, Timestamp};

use crate::error::{Error, Quoted, Result, cut_name};
use crate::limits::Limits;

/// Most names of skipped string fields kept per line in [`SkippedStringFields::names`].
pub const MAX_SKIPPED_NAMES: usize = 3;

/// The unit of line protocol timestamps, the `precision` query parameter of
/// `/api/v2/write`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// `ns`, the default.
    #[default]
    Nanoseconds,
    /// `us`.
    Microseconds,
    /// `ms`.
    Milliseconds,
    /// `s`.
    Seconds,
}

impl Precision {
    /// The query parameter value: `ns`, `us`, `ms` or `s`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Nanoseconds => "ns",
            Precision::Microseconds => "us",
            Precision::Milliseconds => "ms",
            Precision::Seconds => "s",
        }
    }

    /// `timestamp` in this unit as milliseconds, rounded down (towards the past, also for
    /// times before 1970); `None` when it overflows.
    pub fn to_millis(self, timestamp: i64) -> Option<i64> {
        match self {
            Precision::Nanoseconds => Some(timestamp.div_euclid(1_000_000)),
            Precision::Microseconds => Some(timestamp.div_euclid(1_000)),
            Precision::Milliseconds => Some(timestamp),
            Precision::Seconds => timestamp.checked_mul(1_000),
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Precision::Nanoseconds => "nanoseconds",
            Precision::Microseconds => "microseconds",
            Precision::Milliseconds => "milliseconds",
            Precision::Seconds => "seconds",
        }
    }
}

impl FromStr for Precision {
    type Err = Error;

    fn from_str(text: &str) -> Result<Precision> {
        match text {
            "ns" => Ok(Precision::Nanoseconds),
            "us" => Ok(Precision::Microseconds),
            "ms" => Ok(Precision::Milliseconds),
            "s" => Ok(Precision::Seconds),
            other => Err(Error::InvalidPrecision {
                got: cut_name(other),
            }),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A line protocol body, parsed.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct LineBatch<'a> {
    /// One point per numeric or boolean field, line by line in body order.
    pub points: Vec<LinePoint<'a>>,
    /// The lines that had string fields, which were skipped.
    pub skipped: Vec<SkippedStringFields<'a>>,
}

impl LineBatch<'_> {
    /// The points as store points.
    pub fn store_points(&self) -> impl ExactSizeIterator<Item = Point<'_>> {
        self.points.iter().map(LinePoint::to_point)
    }

    /// How many string fields were skipped in all.
    pub fn skipped_count(&self) -> usize {
        self.skipped.iter().map(|skipped| skipped.count).sum()
    }
}

/// One value of one line.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LinePoint<'a> {
    /// The `device` tag, else the measurement, unescaped.
    pub device: Cow<'a, str>,
    /// The field key, unescaped.
    pub field: Cow<'a, str>,
    /// The line's timestamp in milliseconds (rounded down), else the `received_at` given to
    /// [`parse_line_protocol`].
    pub timestamp: Timestamp,
    /// The value: floats as they are, integers converted (rounded beyond 2^53), booleans
    /// as `1.0` and `0.0`. Always finite.
    pub value: f64,
}

impl LinePoint<'_> {
    /// This point as a store point.
    pub fn to_point(&self) -> Point<'_> {
        Point::new(&self.device, &self.field, self.timestamp, self.value)
    }
}

/// The string fields of one line, which were not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SkippedStringFields<'a> {
    /// The line, from 1.
    pub line: usize,
    /// How many string fields the line had.
    pub count: usize,
    /// The first [`MAX_SKIPPED_NAMES`] of their keys, unescaped.
    pub names: Vec<Cow<'a, str>>,
}

/// Parses a line protocol body whose timestamps are in `precision`.
///
/// Timestamps become milliseconds, rounded down, and must be within [`Limits::earliest`]
/// and [`Limits::latest`]; a line without one gets `received_at`. Repeated fields or
/// points are all returned, in order (the store keeps the last).
///
/// Escapes: `\,`, `\ ` and `\=` in measurements, tag keys, tag values and field keys (a
/// backslash before anything else is itself); `\"` and `\\` in string field values.
///
/// # Errors
///
/// [`Error::InvalidLine`] for the first line that is malformed or cannot be stored (a
/// name over 1024 bytes, more than [`Limits::max_fields_per_row`] fields, a value out of
/// range, a timestamp out of range), for example
/// `line 3: expected "=" after field key "temp", found " "`. Nothing of the body is
/// returned then, so a caller never writes half a request.
pub fn parse_line_protocol<'a>(
    body: &'a [u8],
    precision: Precision,
    received_at: Timestamp,
    limits: &Limits,
) -> Result<LineBatch<'a>> {
    // About one point per 32 bytes of a Telegraf body: few reallocations, little waste.
    let mut points = Vec::with_capacity(body.len() / 32);
    let skipped = parse(body, precision, received_at, limits, &mut points)?;
    Ok(LineBatch { points, skipped })
}

/// What [`parse_line_protocol_each`] found besides the points.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct LineSummary<'a> {
    /// Points handed to the closure.
    pub points: usize,
    /// The lines that had string fields, which were skipped.
    pub skipped: Vec<SkippedStringFields<'a>>,
}

impl LineSummary<'_> {
    /// How many string fields were skipped in all.
    pub fn skipped_count(&self) -> usize {
        self.skipped.iter().map(|skipped| skipped.count).sum()
    }
}

/// [`parse_line_protocol`] without the `Vec` of points: each point goes to `each` as soon
/// as its line is complete (the same points, in the same order).
///
/// `each` sees the points of the lines before a malformed one too: when this returns an
/// error, the caller must drop whatever it gathered, exactly as it would never get a
/// [`LineBatch`] from [`parse_line_protocol`]. Nothing is to be written before `Ok`.
///
/// # Errors
///
/// As [`parse_line_protocol`].
pub fn parse_line_protocol_each<'a>(
    body: &'a [u8],
    precision: Precision,
    received_at: Timestamp,
    limits: &Limits,
    each: impl FnMut(Point<'_>),
) -> Result<LineSummary<'a>> {
    let mut sink = EachPoint { each, count: 0 };
    let skipped = parse(body, precision, received_at, limits, &mut sink)?;
    Ok(LineSummary {
        points: sink.count,
        skipped,
    })
}

/// Where the parser puts the points of each complete line.
trait PointSink<'a> {
    // The device comes as the `Cow` itself so that the collecting sink can keep it borrowed
    // (a cheap copy) and the closure sink need not clone an unescaped copy per point.
    #[allow(clippy::ptr_arg)]
    fn point(&mut self, device: &Cow<'a, str>, field: Cow<'a, str>, at: Timestamp, value: f64);
}

impl<'a> PointSink<'a> for Vec<LinePoint<'a>> {
    fn point(&mut self, device: &Cow<'a, str>, field: Cow<'a, str>, at: Timestamp, value: f64) {
        self.push(LinePoint {
            device: device.clone(),
            field,
            timestamp: at,
            value,
        });
    }
}

struct EachPoint<F> {
    each: F,
    count: usize,
}

impl<'a, F: FnMut(Point<'_>)> PointSink<'a> for EachPoint<F> {
    fn point(&mut self, device: &Cow<'a, str>, field: Cow<'a, str>, at: Timestamp, value: f64) {
        self.count += 1;
        (self.each)(Point::new(device, &field, at, value));
    }
}

fn parse<'a, S: PointSink<'a>>(
    body: &'a [u8],
    precision: Precision,
    received_at: Timestamp,
    limits: &Limits,
    sink: &mut S,
) -> Result<Vec<SkippedStringFields<'a>>> {
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        Err(error) => {
            let valid = &body[..error.valid_up_to()];
            return Err(Error::InvalidLine {
                line: 1 + valid.iter().filter(|&&byte| byte == b'\n').count(),
                detail: format!(
                    "expected UTF-8 text, found the byte 0x{:02x}",
                    body[error.valid_up_to()]
                ),
            });
        }
    };
    let mut parser = LineParser {
        text,
        bytes: body,
        position: 0,
        line: 1,
        precision,
        received_at,
        limits,
        sink,
        fields: Vec::new(),
        skipped: Vec::new(),
    };
    parser.parse_body()?;
    Ok(parser.skipped)
}

/// What a byte means to a name being scanned.
const NORMAL: u8 = 0;
const STOP: u8 = 1;
const BACKSLASH: u8 = 2;

/// A scanning table: bytes in `stops` end the name, `\` may escape.
const fn name_table(stops: &[u8]) -> [u8; 256] {
    let mut table = [NORMAL; 256];
    let mut index = 0;
    while index < stops.len() {
        table[stops[index] as usize] = STOP;
        index += 1;
    }
    table[b'\\' as usize] = BACKSLASH;
    table
}

/// A measurement ends at a comma (tags follow), white space or the end of the line; `=`
/// needs no escape in it.
const MEASUREMENT: [u8; 256] = name_table(b", \t\r\n");
/// Tag keys, tag values and field keys also end at `=`.
const KEY: [u8; 256] = name_table(b",= \t\r\n");
/// A field value (other than a string) ends at a comma, white space or the line end.
const VALUE_END: [u8; 256] = name_table(b", \t\r\n");

/// Whether `\` before `byte` escapes it in a name.
fn is_escapable(byte: u8) -> bool {
    matches!(byte, b',' | b' ' | b'=')
}

/// A name as scanned: where it is in the body and whether it has escapes to undo.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    is_escaped: bool,
}

impl Span {
    fn is_empty(self) -> bool {
        self.start == self.end
    }
}

struct LineParser<'a, 'l, S> {
    text: &'a str,
    bytes: &'a [u8],
    position: usize,
    /// The line of `position`, from 1.
    line: usize,
    precision: Precision,
    received_at: Timestamp,
    limits: &'l Limits,
    sink: &'l mut S,
    /// The fields of the line being parsed: its timestamp comes last, so they wait here.
    fields: Vec<(Cow<'a, str>, f64)>,
    skipped: Vec<SkippedStringFields<'a>>,
}

impl<'a, S: PointSink<'a>> LineParser<'a, '_, S> {
    fn parse_body(&mut self) -> Result<()> {
        loop {
            self.skip_blanks();
            match self.peek() {
                None => return Ok(()),
                Some(b'#') => {
                    match self.bytes[self.position..]
                        .iter()
                        .position(|&byte| byte == b'\n')
                    {
                        Some(offset) => {
                            self.position += offset + 1;
                            self.line += 1;
                        }
                        None => self.position = self.bytes.len(),
                    }
                }
                Some(_) if self.is_at_end_of_line() => self.consume_end_of_line(),
                Some(_) => self.parse_line()?,
            }
        }
    }

    /// Parses one line, from its measurement to its line end included.
    fn parse_line(&mut self) -> Result<()> {
        let first_line = self.line;
        let measurement = self.scan(&MEASUREMENT);
        if measurement.is_empty() {
            return Err(self.error(format!("expected a measurement, found {}", self.found())));
        }
        let mut device = None;
        while self.peek() == Some(b',') {
            self.position += 1;
            let key = self.scan(&KEY);
            if key.is_empty() {
                return Err(self.error(format!(
                    "expected a tag key after \",\", found {}",
                    self.found()
                )));
            }
            if self.peek() != Some(b'=') {
                return Err(self.error(format!(
                    "expected \"=\" after tag key {}, found {}",
                    Quoted(&self.name(key)),
                    self.found()
                )));
            }
            self.position += 1;
            let value = self.scan(&KEY);
            if value.is_empty() {
                return Err(self.error(format!(
                    "expected a value for tag {}, found {}",
                    Quoted(&self.name(key)),
                    self.found()
                )));
            }
            if self.peek() == Some(b'=') {
                return Err(self.error(format!(
                    "expected \",\" or \" \" after the value of tag {}, found \"=\"",
                    Quoted(&self.name(key))
                )));
            }
            // Escapes only stand for `,`, ` ` and `=`, so an escaped key is never `device`.
            if &self.bytes[key.start..key.end] == b"device" {
                device = Some(value);
            }
        }
        let device = self.name(device.unwrap_or(measurement));
        if device.len() > MAX_NAME_LEN {
            return Err(self.error(format!(
                "device {}: expected a name of at most {MAX_NAME_LEN} bytes, got {} bytes",
                Quoted(&device),
                device.len()
            )));
        }
        if !matches!(self.peek(), Some(b' ' | b'\t')) {
            return Err(self.error(format!(
                "expected a space and fields after the measurement and tags, found {}",
                self.found()
            )));
        }
        self.skip_blanks();
        if self.is_at_end_of_line() {
            return Err(self.error(
                "expected fields after the measurement and tags, found end of line".to_owned(),
            ));
        }

        self.fields.clear();
        let mut field_count = 0;
        let mut skipped_index = None;
        loop {
            let key = self.scan(&KEY);
            if key.is_empty() {
                return Err(self.error(format!("expected a field key, found {}", self.found())));
            }
            if self.peek() != Some(b'=') {
                return Err(self.error(format!(
                    "expected \"=\" after field key {}, found {}",
                    Quoted(&self.name(key)),
                    self.found()
                )));
            }
            self.position += 1;
            field_count += 1;
            if field_count > self.limits.max_fields_per_row {
                return Err(self.error(format!(
                    "expected at most {} fields, got more",
                    self.limits.max_fields_per_row
                )));
            }
            let field = self.name(key);
            if field.len() > MAX_NAME_LEN {
                return Err(self.error(format!(
                    "field {}: expected a name of at most {MAX_NAME_LEN} bytes, got {} bytes",
                    Quoted(&field),
                    field.len()
                )));
            }
            if self.peek() == Some(b'"') {
                self.skip_string(&field)?;
                let index = *skipped_index.get_or_insert_with(|| {
                    self.skipped.push(SkippedStringFields {
                        line: first_line,
                        count: 0,
                        names: Vec::new(),
                    });
                    self.skipped.len() - 1
                });
                let skipped = &mut self.skipped[index];
                skipped.count += 1;
                if skipped.names.len() < MAX_SKIPPED_NAMES {
                    skipped.names.push(field);
                }
            } else {
                let value = self.parse_value(&field)?;
                self.fields.push((field, value));
            }
            match self.peek() {
                Some(b',') => self.position += 1,
                Some(b' ' | b'\t') => break,
                _ if self.is_at_end_of_line() => break,
                _ => {
                    return Err(self.error(format!(
                        "expected \",\" or \" \" after the value of field {}, found {}",
                        Quoted(&self.name(key)),
                        self.found()
                    )));
                }
            }
        }

        self.skip_blanks();
        let mut timestamp = self.received_at;
        if !self.is_at_end_of_line() {
            timestamp = self.parse_timestamp()?;
            self.skip_blanks();
            if !self.is_at_end_of_line() {
                return Err(self.error(format!(
                    "expected the end of the line after the timestamp, found {}",
                    self.found()
                )));
            }
        }
        self.consume_end_of_line();
        for (field, value) in self.fields.drain(..) {
            self.sink.point(&device, field, timestamp, value);
        }
        Ok(())
    }

    /// Parses a number or boolean field value, up to (not including) its end.
    fn parse_value(&mut self, field: &str) -> Result<f64> {
        let start = self.position;
        let mut end = start;
        while let Some(&byte) = self.bytes.get(end) {
            if VALUE_END[usize::from(byte)] == STOP {
                break;
            }
            end += 1;
        }
        self.position = end;
        let token = &self.text[start..end];
        // Plain decimals, what sensors send nearly always, take the fast path.
        if let Some(float) = parse_plain_decimal(token.as_bytes()) {
            return Ok(float);
        }
        let expected = match token.as_bytes().last() {
            None => {
                return Err(self.error(format!(
                    "field {}: expected a value after \"=\", found {}",
                    Quoted(field),
                    self.found()
                )));
            }
            Some(b'i') => match token[..token.len() - 1].parse::<i64>() {
                Ok(integer) => return Ok(integer as f64),
                Err(_) => "a 64-bit integer such as 12i",
            },
            Some(b'u') => match token[..token.len() - 1].parse::<u64>() {
                Ok(unsigned) => return Ok(unsigned as f64),
                Err(_) => "an unsigned 64-bit integer such as 12u",
            },
            Some(_) => match token {
                "t" | "T" | "true" | "True" | "TRUE" => return Ok(1.0),
                "f" | "F" | "false" | "False" | "FALSE" => return Ok(0.0),
                _ if is_float_syntax(token) => match token.parse::<f64>() {
                    Ok(float) if float.is_finite() => return Ok(float),
                    Ok(_) => "a float within the 64-bit range",
                    Err(_) => "a float such as 1.5 or -1e3",
                },
                _ => {
                    "a float (1.5), integer (12i), unsigned integer (12u), boolean (true) or string (\"on\")"
                }
            },
        };
        Err(self.error(format!(
            "field {}: expected {expected}, got {}",
            Quoted(field),
            Quoted(token)
        )))
    }

    /// Skips a string field value from its opening quote to its closing quote included.
    fn skip_string(&mut self, field: &str) -> Result<()> {
        let opening_line = self.line;
        let mut position = self.position + 1;
        loop {
            match self.bytes.get(position) {
                None => {
                    return Err(Error::InvalidLine {
                        line: opening_line,
                        detail: format!(
                            "field {}: expected a closing quote for the string value, found the end of the body",
                            Quoted(field)
                        ),
                    });
                }
                Some(b'"') => {
                    self.position = position + 1;
                    return Ok(());
                }
                Some(b'\\') if matches!(self.bytes.get(position + 1), Some(b'"' | b'\\')) => {
                    position += 2;
                }
                Some(b'\n') => {
                    self.line += 1;
                    position += 1;
                }
                Some(_) => position += 1,
            }
        }
    }

    fn parse_timestamp(&mut self) -> Result<Timestamp> {
        let start = self.position;
        let mut end = start;
        while let Some(&byte) = self.bytes.get(end) {
            if VALUE_END[usize::from(byte)] == STOP {
                break;
            }
            end += 1;
        }
        self.position = end;
        let token = &self.text[start..end];
        let Ok(timestamp) = token.parse::<i64>() else {
            return Err(self.error(format!(
                "expected a timestamp in {} as an integer, got {}",
                self.precision.unit(),
                Quoted(token)
            )));
        };
        match self.precision.to_millis(timestamp) {
            Some(millis) if self.limits.is_in_time_range(millis) => {
                Ok(Timestamp::from_millis(millis))
            }
            _ => Err(self.error(format!(
                "expected a timestamp {}, got {timestamp} (precision {})",
                self.limits.describe_time_range(),
                self.precision
            ))),
        }
    }

    /// Scans a name with `table`, leaving `position` at the byte that ended it.
    fn scan(&mut self, table: &[u8; 256]) -> Span {
        let start = self.position;
        let mut position = start;
        let mut is_escaped = false;
        while let Some(&byte) = self.bytes.get(position) {
            match table[usize::from(byte)] {
                NORMAL => position += 1,
                STOP => break,
                _ => match self.bytes.get(position + 1) {
                    Some(&next) if is_escapable(next) => {
                        is_escaped = true;
                        position += 2;
                    }
                    _ => position += 1,
                },
            }
        }
        self.position = position;
        Span {
            start,
            end: position,
            is_escaped,
        }
    }

    /// The name at `span`, unescaped; borrowed when it has no escapes.
    fn name(&self, span: Span) -> Cow<'a, str> {
        let raw = &self.text[span.start..span.end];
        if span.is_escaped {
            Cow::Owned(unescape_name(raw))
        } else {
            Cow::Borrowed(raw)
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.position).copied()
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.position += 1;
        }
    }

    fn is_at_end_of_line(&self) -> bool {
        match self.peek() {
            None | Some(b'\n') => true,
            Some(b'\r') => self.bytes.get(self.position + 1) == Some(&b'\n'),
            Some(_) => false,
        }
    }

    /// Moves past the `\n` or `\r\n` at `position`, if any.
    fn consume_end_of_line(&mut self) {
        match self.peek() {
            Some(b'\n') => self.position += 1,
            Some(b'\r') => self.position += 2,
            _ => return,
        }
        self.line += 1;
    }

    /// What is at `position`, for messages: `" "`, `","`, `end of line`.
    fn found(&self) -> String {
        if self.is_at_end_of_line() {
            return "end of line".to_owned();
        }
        match self.text[self.position..].chars().next() {
            Some(character) => format!("{:?}", character.to_string()),
            None => "end of line".to_owned(),
        }
    }

    fn error(&self, detail: String) -> Error {
        Error::InvalidLine {
            line: self.line,
            detail,
        }
    }
}

/// Powers of ten that are exact in an `f64` (up to 10^22), for [`parse_plain_decimal`].
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The value of a plain decimal such as `21.37`, `-0.5` or `40` (an optional `-`,
/// digits, at most one `.`, at most 15 digits in all), or `None` for anything else,
/// which the caller leaves to the standard parser.
///
/// Such a decimal is `m / 10^k` with `m < 2^53` and `k <= 15`, both exact in an `f64`,
/// and IEEE division rounds correctly, so the result is the correctly rounded value, the
/// same `str::parse` gives (Clinger's fast path). It is what sensors send nearly always,
/// and three times cheaper than the general parser.
fn parse_plain_decimal(token: &[u8]) -> Option<f64> {
    // A sign, 15 digits and a point at most: longer tokens (full-precision floats such as
    // Telegraf's 37.46282365612453) go to the standard parser without a wasted scan.
    if token.len() > 17 {
        return None;
    }
    let (is_negative, digits) = match token.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, token),
    };
    let mut mantissa = 0u64;
    let mut digit_count = 0usize;
    let mut decimals: Option<usize> = None;
    for &byte in digits {
        match byte {
            b'0'..=b'9' => {
                digit_count += 1;
                if digit_count > 15 {
                    return None;
                }
                mantissa = mantissa * 10 + u64::from(byte - b'0');
                if let Some(decimals) = decimals.as_mut() {
                    *decimals += 1;
                }
            }
            b'.' if decimals.is_none() => decimals = Some(0),
            _ => return None,
        }
    }
    if digit_count == 0 {
        return None;
    }
    let value = mantissa as f64 / EXACT_POWERS_OF_TEN[decimals.unwrap_or(0)];
    Some(if is_negative { -value } else { value })
}

/// Whether `token` has only the characters of a decimal float (so that `inf`, `NaN` and
/// `infinity`, which Rust would parse, are refused like InfluxDB refuses them).
fn is_float_syntax(token: &str) -> bool {
    token
        .bytes()
        .all(|byte| matches!(byte, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-'))
}

/// Undoes the escapes of a name: `\,`, `\ ` and `\=` stand for the character after the
/// backslash; any other backslash is itself.
fn unescape_name(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut name = String::with_capacity(raw.len());
    let mut segment_start = 0;
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'\\' && bytes.get(index + 1).is_some_and(|&next| is_escapable(next)) {
            name.push_str(&raw[segment_start..index]);
            // The escaped character starts the next segment.
            segment_start = index + 1;
            index += 2;
        } else {
            index += 1;
        }
    }
    name.push_str(&raw[segment_start..]);
    name
}

#[cfg(test)]
mod tests {
    use super::parse_plain_decimal;

    #[test]
    fn plain_decimals_parse_exactly_like_the_standard_parser() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut tokens: Vec<String> = [
            "0",
            "-0",
            "0.0",
            "-0.0",
            "1.",
            ".5",
            "-.5",
            "007.50",
            "21.37",
            "-40",
            "999999999999999",
            "0.00000000000001",
            "123456789012.345",
            "900719925474.099",
        ]
        .iter()
        .map(|token| (*token).to_owned())
        .collect();
        for _ in 0..200_000 {
            let digits = 1 + (next() % 15) as usize;
            let mut token = String::new();
            if next() % 3 == 0 {
                token.push('-');
            }
            let point = (next() % (digits as u64 + 2)) as usize;
            for index in 0..digits {
                if index == point {
                    token.push('.');
                }
                token.push(char::from(b'0' + (next() % 10) as u8));
            }
            tokens.push(token);
        }
        for token in &tokens {
            let expected: f64 = token.parse().unwrap_or_else(|_| panic!("{token}"));
            let fast = parse_plain_decimal(token.as_bytes());
            assert_eq!(fast.map(f64::to_bits), Some(expected.to_bits()), "{token}");
        }
    }

    #[test]
    fn anything_but_a_plain_decimal_is_left_to_the_standard_parser() {
        for token in [
            "",
            "-",
            ".",
            "-.",
            "1.2.3",
            "1e3",
            "1E3",
            "+1",
            "12i",
            "12u",
            "true",
            "t",
            "inf",
            "NaN",
            "1234567890123456",
            "0.1234567890123456",
            "--1",
            "1-",
            "1_0",
        ] {
            assert_eq!(parse_plain_decimal(token.as_bytes()), None, "{token}");
        }
    }
}
