//! JSON telemetry (`devices/{id}/telemetry`, `POST /api/v1/devices/{id}/telemetry`): an
//! object of fields or an array of them, turned into [`TelemetryField`]s.
//!
//! The payload is walked once by `serde_json` with visitors of our own, so no `Value` tree
//! is built and field names without escapes are borrowed from the payload. A visitor that
//! meets something it cannot store puts the crate's [`Error`] aside and makes `serde_json`
//! stop with a placeholder error; [`parse_telemetry`] then returns the error put aside, so
//! messages name the field and read the same whatever the JSON parser's wording.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use fleetwire_store::{MAX_NAME_LEN, Point, Timestamp};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::{Error, Quoted, Result, cut_name};
use crate::json::{Kind, invalid_json};
use crate::limits::Limits;

/// Rows with at most this many fields are checked for repeated names pair by pair; larger
/// ones with a hash set.
const PAIRWISE_DUPLICATE_CHECK: usize = 16;

/// A telemetry payload, parsed: every field of every row, and the device the payload says
/// it comes from, if it says.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Telemetry<'a> {
    /// The `device_id` of the flat form (`{"device_id": "d1", "temperature": 21.5}`), the
    /// same in every row that has one. The caller rejects the payload when it is not the
    /// device of the topic or URL.
    pub device_id: Option<Cow<'a, str>>,
    /// The fields, row by row in payload order, never empty.
    pub fields: Vec<TelemetryField<'a>>,
}

impl Telemetry<'_> {
    /// The fields as store points of `device`.
    pub fn points<'s>(&'s self, device: &'s str) -> impl ExactSizeIterator<Item = Point<'s>> {
        self.fields.iter().map(move |field| field.to_point(device))
    }
}

/// One value of one row: a time series name, when, and the value.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TelemetryField<'a> {
    /// The field name, nested names joined with `.` (`gps.lat`). Borrowed from the
    /// payload unless it was flattened or had JSON escapes.
    pub name: Cow<'a, str>,
    /// The row's `ts` or `timestamp`, else the `received_at` given to [`parse_telemetry`].
    pub timestamp: Timestamp,
    /// The number, or `1.0` / `0.0` for `true` / `false`. Always finite.
    pub value: f64,
}

impl TelemetryField<'_> {
    /// This field as a store point of `device`.
    pub fn to_point<'s>(&'s self, device: &'s str) -> Point<'s> {
        Point::new(device, &self.name, self.timestamp, self.value)
    }
}

/// Parses a telemetry payload: a JSON object of fields, or an array of such objects.
///
/// In each row, `ts` (milliseconds since the epoch) or `timestamp` (seconds, possibly
/// fractional) gives the time, rounded to the nearest millisecond; a row without either
/// gets `received_at`. `device_id` is reported in [`Telemetry::device_id`]. Every other
/// key is a field: numbers are kept as `f64`, booleans become `1.0` and `0.0`, nested
/// objects are flattened with `.` up to [`Limits::max_depth`] levels. Anything else (a
/// string, null, an array, an empty or too long name, a repeated name, a row without
/// fields) rejects the whole payload.
///
/// # Errors
///
/// An [`Error`] naming the row (in arrays, from 1), the field, what was expected and what
/// came, such as `row 2: field "status": expected a number or boolean, got a string`.
pub fn parse_telemetry<'a>(
    payload: &'a [u8],
    received_at: Timestamp,
    limits: &Limits,
) -> Result<Telemetry<'a>> {
    let mut parser = Parser {
        limits,
        received_at,
        // Reserving by size saves the growth steps of big arrays; a field takes more
        // than 16 bytes of JSON, so this never over-reserves much.
        fields: Vec::with_capacity(payload.len() / 16),
        device_id: None,
        error: None,
        row: None,
        row_start: 0,
        row_time: None,
        has_row_device_id: false,
    };
    let mut deserializer = serde_json::Deserializer::from_slice(payload);
    let outcome = Document(&mut parser)
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end());
    if let Err(error) = outcome {
        return Err(parser.error.take().unwrap_or_else(|| invalid_json(&error)));
    }
    if parser.fields.is_empty() {
        return Err(Error::NoFields { row: None });
    }
    Ok(Telemetry {
        device_id: parser.device_id.map(|(device_id, _)| device_id),
        fields: parser.fields,
    })
}

/// The unit of a row's time: `ts` or `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeKey {
    /// `ts`: milliseconds since the epoch.
    Millis,
    /// `timestamp`: seconds since the epoch.
    Seconds,
}

impl TimeKey {
    fn key(self) -> &'static str {
        match self {
            TimeKey::Millis => "ts",
            TimeKey::Seconds => "timestamp",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            TimeKey::Millis => "milliseconds",
            TimeKey::Seconds => "seconds",
        }
    }

    fn millis_per_unit(self) -> i64 {
        match self {
            TimeKey::Millis => 1,
            TimeKey::Seconds => 1000,
        }
    }
}

/// The state of one parse: the fields so far, the current row, and the error put aside.
struct Parser<'a, 'l> {
    limits: &'l Limits,
    received_at: Timestamp,
    fields: Vec<TelemetryField<'a>>,
    /// The payload's device id and the row (from 1; 0 for a single object) it first came in.
    device_id: Option<(Cow<'a, str>, usize)>,
    /// The error that stopped the parse, when it was ours rather than `serde_json`'s.
    error: Option<Error>,
    /// The current row of an array, from 1; `None` for a single object.
    row: Option<usize>,
    /// Index in `fields` of the current row's first field.
    row_start: usize,
    /// The current row's `ts` or `timestamp`, in milliseconds.
    row_time: Option<(TimeKey, i64)>,
    /// Whether the current row had a `device_id`.
    has_row_device_id: bool,
}

impl<'a> Parser<'a, '_> {
    /// Puts `error` aside and returns the placeholder that makes `serde_json` stop.
    fn fail<E: de::Error>(&mut self, error: Error) -> E {
        self.error = Some(error);
        E::custom("payload rejected")
    }

    fn field_error(&self, name: &str, detail: String) -> Error {
        Error::InvalidField {
            row: self.row,
            name: cut_name(name),
            detail,
        }
    }

    /// Parses one row (an object at the top level or in the array).
    fn visit_row<A: MapAccess<'a>>(&mut self, mut map: A) -> Result<(), A::Error> {
        self.row_start = self.fields.len();
        self.row_time = None;
        self.has_row_device_id = false;
        self.visit_object(&mut map, None, 1)?;
        self.finish_row().map_err(|error| self.fail(error))
    }

    /// Parses the entries of an object whose fields have `depth` levels of name, under
    /// `prefix` (`None` for the row itself).
    fn visit_object<A: MapAccess<'a>>(
        &mut self,
        map: &mut A,
        prefix: Option<&str>,
        depth: usize,
    ) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if prefix.is_none() {
                let time_key = match &*key {
                    "ts" => Some(TimeKey::Millis),
                    "timestamp" => Some(TimeKey::Seconds),
                    "device_id" => {
                        map.next_value_seed(DeviceIdSeed(self))
                            .map_err(|error| self.number_out_of_range(error, "device_id"))?;
                        continue;
                    }
                    _ => None,
                };
                if let Some(time_key) = time_key {
                    map.next_value_seed(TimeSeed {
                        parser: self,
                        key: time_key,
                    })
                    .map_err(|error| self.number_out_of_range(error, time_key.key()))?;
                    continue;
                }
            }
            let name = match prefix {
                None => key,
                Some(prefix) => Cow::Owned(format!("{prefix}.{key}")),
            };
            if key_is_empty(&name, prefix) {
                let error = self.field_error(
                    &name,
                    "expected a non-empty key, got an empty one".to_owned(),
                );
                return Err(self.fail(error));
            }
            let value = map
                .next_value_seed(FieldSeed {
                    parser: self,
                    name: &name,
                    depth,
                })
                .map_err(|error| self.number_out_of_range(error, &name))?;
            if let Some(value) = value {
                self.push(name, value).map_err(|error| self.fail(error))?;
            }
        }
        Ok(())
    }

    /// Names the field when `serde_json` stopped at a number beyond `f64` (such as
    /// `1e400`): the only value error it raises before our visitors see the value.
    fn number_out_of_range<E: de::Error>(&mut self, error: E, name: &str) -> E {
        if self.error.is_none() && error.to_string().starts_with("number out of range") {
            self.error = Some(self.field_error(
                name,
                "expected a number within the range of a 64-bit float, got a larger one".to_owned(),
            ));
        }
        error
    }

    fn push(&mut self, name: Cow<'a, str>, value: f64) -> Result<()> {
        if name.len() > MAX_NAME_LEN {
            return Err(self.field_error(
                &name,
                format!(
                    "expected a name of at most {MAX_NAME_LEN} bytes, got {} bytes",
                    name.len()
                ),
            ));
        }
        if self.fields.len() - self.row_start >= self.limits.max_fields_per_row {
            return Err(Error::TooLarge {
                row: self.row,
                detail: format!(
                    "expected at most {} fields, got more",
                    self.limits.max_fields_per_row
                ),
            });
        }
        self.fields.push(TelemetryField {
            name,
            timestamp: self.received_at,
            value,
        });
        Ok(())
    }

    fn set_row_time(&mut self, key: TimeKey, millis: i64) -> Result<()> {
        match self.row_time {
            Some((earlier, _)) if earlier == key => {
                Err(self.field_error(key.key(), "expected once, got it twice".to_owned()))
            }
            Some(_) => Err(Error::InvalidShape {
                row: self.row,
                detail:
                    "expected either \"ts\" (milliseconds) or \"timestamp\" (seconds), got both"
                        .to_owned(),
            }),
            None => {
                self.row_time = Some((key, millis));
                Ok(())
            }
        }
    }

    fn set_device_id(&mut self, device_id: Cow<'a, str>) -> Result<()> {
        if self.has_row_device_id {
            return Err(self.field_error("device_id", "expected once, got it twice".to_owned()));
        }
        self.has_row_device_id = true;
        match &self.device_id {
            None => self.device_id = Some((device_id, self.row.unwrap_or(0))),
            Some((first, first_row)) if *first != device_id => {
                return Err(self.field_error(
                    "device_id",
                    format!(
                        "expected the device of row {first_row} ({}), got {}",
                        Quoted(first),
                        Quoted(&device_id)
                    ),
                ));
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Checks the row just parsed and gives its fields their time.
    fn finish_row(&mut self) -> Result<()> {
        let row = &mut self.fields[self.row_start..];
        if row.is_empty() {
            return Err(Error::NoFields { row: self.row });
        }
        if let Some((_, millis)) = self.row_time {
            let timestamp = Timestamp::from_millis(millis);
            for field in row.iter_mut() {
                field.timestamp = timestamp;
            }
        }
        if let Some(name) = first_repeated_name(row) {
            return Err(Error::InvalidField {
                row: self.row,
                name: cut_name(name),
                detail: "expected once, got it twice".to_owned(),
            });
        }
        Ok(())
    }

    /// Milliseconds from an integer `value` of `key`, if in range.
    fn integer_millis(&self, key: TimeKey, value: i128) -> Result<i64> {
        i64::try_from(value)
            .ok()
            .and_then(|value| value.checked_mul(key.millis_per_unit()))
            .filter(|&millis| self.limits.is_in_time_range(millis))
            .ok_or_else(|| self.time_range_error(key, &value))
    }

    /// Milliseconds from a float `value` of `key`, rounded, if in range.
    fn float_millis(&self, key: TimeKey, value: f64) -> Result<i64> {
        let millis = value * key.millis_per_unit() as f64;
        if self.limits.is_float_in_time_range(millis) {
            // In range, so the conversion neither saturates nor loses anything.
            Ok(millis.round() as i64)
        } else {
            Err(self.time_range_error(key, &FloatText(value)))
        }
    }

    fn time_range_error(&self, key: TimeKey, value: &dyn fmt::Display) -> Error {
        self.field_error(
            key.key(),
            format!(
                "expected {} since the epoch {}, got {value}",
                key.unit(),
                self.limits.describe_time_range()
            ),
        )
    }
}

/// Whether the last level of `name` (under `prefix`) is empty.
fn key_is_empty(name: &str, prefix: Option<&str>) -> bool {
    match prefix {
        None => name.is_empty(),
        Some(prefix) => name.len() == prefix.len() + 1,
    }
}

/// The first name of `row` that an earlier field of the row already has.
fn first_repeated_name<'r>(row: &'r [TelemetryField<'_>]) -> Option<&'r str> {
    if row.len() <= PAIRWISE_DUPLICATE_CHECK {
        (1..row.len()).find_map(|later| {
            row[..later]
                .iter()
                .any(|earlier| earlier.name == row[later].name)
                .then_some(&*row[later].name)
        })
    } else {
        let mut seen = HashSet::with_capacity(row.len());
        row.iter()
            .map(|field| &*field.name)
            .find(|name| !seen.insert(*name))
    }
}

/// A float as `{:?}` writes it: `1.5`, `1e300`, never 300 digits.
struct FloatText(f64);

impl fmt::Display for FloatText {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:?}", self.0)
    }
}

/// Implements the `visit_*` methods of the kinds a visitor rejects by calling its
/// `reject(kind)`.
macro_rules! reject_kinds {
    ($($method:ident($($argument:ty)?) => $kind:expr),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, $(_: $argument)?) -> Result<Self::Value, E> {
                self.reject($kind)
            }
        )*
    };
}

macro_rules! reject_seq_and_map {
    () => {
        fn visit_seq<A: SeqAccess<'a>>(self, _: A) -> Result<Self::Value, A::Error> {
            self.reject(Kind::Array)
        }

        fn visit_map<A: MapAccess<'a>>(self, _: A) -> Result<Self::Value, A::Error> {
            self.reject(Kind::Object)
        }
    };
}

/// The whole payload: an object (one row) or an array of rows.
struct Document<'p, 'a, 'l>(&'p mut Parser<'a, 'l>);

impl Document<'_, '_, '_> {
    fn reject<T, E: de::Error>(self, kind: Kind) -> Result<T, E> {
        Err(self.0.fail(Error::InvalidShape {
            row: None,
            detail: format!("expected a JSON object of fields or an array of objects, got {kind}"),
        }))
    }
}

impl<'a> DeserializeSeed<'a> for Document<'_, 'a, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'a>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'a> Visitor<'a> for Document<'_, 'a, '_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON object of fields or an array of objects")
    }

    fn visit_map<A: MapAccess<'a>>(self, map: A) -> Result<(), A::Error> {
        self.0.visit_row(map)
    }

    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut row = 1;
        while seq
            .next_element_seed(RowSeed {
                parser: &mut *self.0,
                row,
            })?
            .is_some()
        {
            row += 1;
        }
        Ok(())
    }

    reject_kinds! {
        visit_bool(bool) => Kind::Boolean,
        visit_i64(i64) => Kind::Number,
        visit_u64(u64) => Kind::Number,
        visit_f64(f64) => Kind::Number,
        visit_str(&str) => Kind::String,
        visit_unit() => Kind::Null,
    }
}

/// One element of the top-level array.
struct RowSeed<'p, 'a, 'l> {
    parser: &'p mut Parser<'a, 'l>,
    /// Its position, from 1.
    row: usize,
}

impl RowSeed<'_, '_, '_> {
    fn reject<T, E: de::Error>(self, kind: Kind) -> Result<T, E> {
        let row = Some(self.row);
        Err(self.parser.fail(Error::InvalidShape {
            row,
            detail: format!("expected an object of fields, got {kind}"),
        }))
    }
}

impl<'a> DeserializeSeed<'a> for RowSeed<'_, 'a, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'a>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.row > self.parser.limits.max_rows {
            let detail = format!(
                "expected at most {} rows, got more",
                self.parser.limits.max_rows
            );
            return Err(self.parser.fail(Error::TooLarge { row: None, detail }));
        }
        deserializer.deserialize_any(self)
    }
}

impl<'a> Visitor<'a> for RowSeed<'_, 'a, '_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an object of fields")
    }

    fn visit_map<A: MapAccess<'a>>(self, map: A) -> Result<(), A::Error> {
        self.parser.row = Some(self.row);
        self.parser.visit_row(map)
    }

    fn visit_seq<A: SeqAccess<'a>>(self, _: A) -> Result<(), A::Error> {
        self.reject(Kind::Array)
    }

    reject_kinds! {
        visit_bool(bool) => Kind::Boolean,
        visit_i64(i64) => Kind::Number,
        visit_u64(u64) => Kind::Number,
        visit_f64(f64) => Kind::Number,
        visit_str(&str) => Kind::String,
        visit_unit() => Kind::Null,
    }
}

/// An object key, borrowed from the payload when it has no escapes.
struct KeySeed;

impl<'a> DeserializeSeed<'a> for KeySeed {
    type Value = Cow<'a, str>;

    fn deserialize<D: Deserializer<'a>>(self, deserializer: D) -> Result<Cow<'a, str>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'a> Visitor<'a> for KeySeed {
    type Value = Cow<'a, str>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a key")
    }

    fn visit_borrowed_str<E: de::Error>(self, key: &'a str) -> Result<Cow<'a, str>, E> {
        Ok(Cow::Borrowed(key))
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Cow<'a, str>, E> {
        Ok(Cow::Owned(key.to_owned()))
    }

    fn visit_string<E: de::Error>(self, key: String) -> Result<Cow<'a, str>, E> {
        Ok(Cow::Owned(key))
    }
}

/// The value of a field: a number or boolean (`Some`), or a nested object whose fields
/// the parser has taken (`None`).
struct FieldSeed<'p, 'n, 'a, 'l> {
    parser: &'p mut Parser<'a, 'l>,
    name: &'n str,
    /// Levels of `name`.
    depth: usize,
}

impl FieldSeed<'_, '_, '_, '_> {
    fn reject<T, E: de::Error>(self, kind: Kind) -> Result<T, E> {
        let error = self.parser.field_error(
            self.name,
            format!("expected a number or boolean, got {kind}"),
        );
        Err(self.parser.fail(error))
    }
}

impl<'a> DeserializeSeed<'a> for FieldSeed<'_, '_, 'a, '_> {
    type Value = Option<f64>;

    fn deserialize<D: Deserializer<'a>>(self, deserializer: D) -> Result<Option<f64>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'a> Visitor<'a> for FieldSeed<'_, '_, 'a, '_> {
    type Value = Option<f64>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a number or boolean")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Option<f64>, E> {
        Ok(Some(if value { 1.0 } else { 0.0 }))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Option<f64>, E> {
        Ok(Some(value as f64))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Option<f64>, E> {
        Ok(Some(value as f64))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Option<f64>, E> {
        if value.is_finite() {
            Ok(Some(value))
        } else {
            let error = self
                .parser
                .field_error(self.name, format!("expected a finite number, got {value}"));
            Err(self.parser.fail(error))
        }
    }

    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<Option<f64>, A::Error> {
        if self.depth >= self.parser.limits.max_depth {
            let error = self.parser.field_error(
                self.name,
                format!(
                    "expected a number or boolean, got an object nested deeper than {} levels",
                    self.parser.limits.max_depth
                ),
            );
            return Err(self.parser.fail(error));
        }
        self.parser
            .visit_object(&mut map, Some(self.name), self.depth + 1)?;
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'a>>(self, _: A) -> Result<Option<f64>, A::Error> {
        self.reject(Kind::Array)
    }

    reject_kinds! {
        visit_str(&str) => Kind::String,
        visit_unit() => Kind::Null,
    }
}

/// The value of `ts` or `timestamp`.
struct TimeSeed<'p, 'a, 'l> {
    parser: &'p mut Parser<'a, 'l>,
    key: TimeKey,
}

impl TimeSeed<'_, '_, '_> {
    fn reject<T, E: de::Error>(self, kind: Kind) -> Result<T, E> {
        let error = self.parser.field_error(
            self.key.key(),
            format!(
                "expected {} since the epoch as a number, got {kind}",
                self.key.unit()
            ),
        );
        Err(self.parser.fail(error))
    }

    fn set<E: de::Error>(self, millis: Result<i64>) -> Result<(), E> {
        match millis.and_then(|millis| self.parser.set_row_time(self.key, millis)) {
            Ok(()) => Ok(()),
            Err(error) => Err(self.parser.fail(error)),
        }
    }
}

impl<'a> DeserializeSeed<'a> for TimeSeed<'_, 'a, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'a>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'a> Visitor<'a> for TimeSeed<'_, 'a, '_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} since the epoch", self.key.unit())
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<(), E> {
        let millis = self.parser.integer_millis(self.key, i128::from(value));
        self.set(millis)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<(), E> {
        let millis = self.parser.integer_millis(self.key, i128::from(value));
        self.set(millis)
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<(), E> {
        let millis = self.parser.float_millis(self.key, value);
        self.set(millis)
    }

    reject_kinds! {
        visit_bool(bool) => Kind::Boolean,
        visit_str(&str) => Kind::String,
        visit_unit() => Kind::Null,
    }
    reject_seq_and_map!();
}

/// The value of `device_id`.
struct DeviceIdSeed<'p, 'a, 'l>(&'p mut Parser<'a, 'l>);

impl<'a> DeviceIdSeed<'_, 'a, '_> {
    fn reject<T, E: de::Error>(self, kind: Kind) -> Result<T, E> {
        let error = self.0.field_error(
            "device_id",
            format!("expected the device id as a string, got {kind}"),
        );
        Err(self.0.fail(error))
    }

    fn set<E: de::Error>(self, device_id: Cow<'a, str>) -> Result<(), E> {
        self.0
            .set_device_id(device_id)
            .map_err(|error| self.0.fail(error))
    }
}

impl<'a> DeserializeSeed<'a> for DeviceIdSeed<'_, 'a, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'a>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'a> Visitor<'a> for DeviceIdSeed<'_, 'a, '_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("the device id as a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, device_id: &'a str) -> Result<(), E> {
        self.set(Cow::Borrowed(device_id))
    }

    fn visit_str<E: de::Error>(self, device_id: &str) -> Result<(), E> {
        self.set(Cow::Owned(device_id.to_owned()))
    }

    fn visit_string<E: de::Error>(self, device_id: String) -> Result<(), E> {
        self.set(Cow::Owned(device_id))
    }

    reject_kinds! {
        visit_bool(bool) => Kind::Boolean,
        visit_i64(i64) => Kind::Number,
        visit_u64(u64) => Kind::Number,
        visit_f64(f64) => Kind::Number,
        visit_unit() => Kind::Null,
    }
    reject_seq_and_map!();
}
