//! InfluxDB line protocol: tables of bodies and the points they give, or the exact error.

use fleetwire_formats::{
    Error, Limits, LineBatch, Precision, parse_line_protocol, parse_line_protocol_each,
};
use fleetwire_store::{MAX_NAME_LEN, Point, Timestamp};

const RECEIVED_AT: i64 = 1_700_000_000_000;
const R: i64 = RECEIVED_AT;

/// Parses `body` with both entry points and checks they agree: the same points in the
/// same order and the same skipped fields, or the same error.
fn parse(body: &str, precision: Precision) -> Result<LineBatch<'_>, Error> {
    let received_at = Timestamp::from_millis(RECEIVED_AT);
    let batch = parse_line_protocol(body.as_bytes(), precision, received_at, &Limits::default());
    let mut each = Vec::new();
    let summary = parse_line_protocol_each(
        body.as_bytes(),
        precision,
        received_at,
        &Limits::default(),
        |point| {
            each.push((
                point.device.to_owned(),
                point.field.to_owned(),
                point.timestamp.as_millis(),
                point.value.to_bits(),
            ))
        },
    );
    match (&batch, summary) {
        (Ok(batch), Ok(summary)) => {
            let collected: Vec<_> = batch
                .points
                .iter()
                .map(|point| {
                    (
                        point.device.to_string(),
                        point.field.to_string(),
                        point.timestamp.as_millis(),
                        point.value.to_bits(),
                    )
                })
                .collect();
            assert_eq!(each, collected, "{body:?}");
            assert_eq!(summary.points, collected.len());
            assert_eq!(summary.skipped, batch.skipped, "{body:?}");
            assert_eq!(summary.skipped_count(), batch.skipped_count());
        }
        (Err(batch_error), Err(each_error)) => {
            assert_eq!(batch_error.to_string(), each_error.to_string());
        }
        (batch, summary) => panic!("{body:?}: {batch:?} but {summary:?}"),
    }
    batch
}

fn points(batch: &LineBatch<'_>) -> Vec<(String, String, i64, f64)> {
    batch
        .points
        .iter()
        .map(|point| {
            (
                point.device.to_string(),
                point.field.to_string(),
                point.timestamp.as_millis(),
                point.value,
            )
        })
        .collect()
}

fn error(body: &str, precision: Precision) -> String {
    match parse(body, precision) {
        Ok(batch) => panic!("{body:?} was accepted as {batch:?}"),
        Err(error) => error.to_string(),
    }
}

use Precision::{Microseconds as Us, Milliseconds as Ms, Nanoseconds as Ns, Seconds as S};

/// `(behaviour, precision, body, [(device, field, timestamp, value)])`.
#[allow(clippy::type_complexity)]
const ACCEPTED: &[(&str, Precision, &str, &[(&str, &str, i64, f64)])] = &[
    (
        "the device tag names the device",
        Ns,
        "cpu,host=h1,device=d42 usage_user=12.5,usage_system=3.25,usage_idle=84.25 1700000000000000000\n",
        &[
            ("d42", "usage_user", 1_700_000_000_000, 12.5),
            ("d42", "usage_system", 1_700_000_000_000, 3.25),
            ("d42", "usage_idle", 1_700_000_000_000, 84.25),
        ],
    ),
    (
        "without a device tag the measurement is the device",
        Ns,
        "sensor-7,room=kitchen temperature=21.5 1700000000000000000",
        &[("sensor-7", "temperature", 1_700_000_000_000, 21.5)],
    ),
    (
        "a line without timestamp gets the time of receipt",
        Ns,
        "m f=1",
        &[("m", "f", R, 1.0)],
    ),
    (
        "nanoseconds are rounded down to milliseconds",
        Ns,
        "m f=1 1700000000123999999",
        &[("m", "f", 1_700_000_000_123, 1.0)],
    ),
    (
        "microseconds are rounded down to milliseconds",
        Us,
        "m f=1 1700000000123999",
        &[("m", "f", 1_700_000_000_123, 1.0)],
    ),
    (
        "milliseconds are kept",
        Ms,
        "m f=1 1700000000123",
        &[("m", "f", 1_700_000_000_123, 1.0)],
    ),
    (
        "seconds become milliseconds",
        S,
        "m f=1 1700000000",
        &[("m", "f", 1_700_000_000_000, 1.0)],
    ),
    (
        "the epoch itself is accepted",
        Ns,
        "m f=1 0",
        &[("m", "f", 0, 1.0)],
    ),
    (
        "floats in every spelling",
        Ns,
        "m a=1,b=1.5,c=-1e3,d=1E3,e=.5,f=5.,g=+2,h=-0.0,i=1.7976931348623157e308",
        &[
            ("m", "a", R, 1.0),
            ("m", "b", R, 1.5),
            ("m", "c", R, -1000.0),
            ("m", "d", R, 1000.0),
            ("m", "e", R, 0.5),
            ("m", "f", R, 5.0),
            ("m", "g", R, 2.0),
            ("m", "h", R, -0.0),
            ("m", "i", R, f64::MAX),
        ],
    ),
    (
        "integers and unsigned integers become floats",
        Ns,
        "m a=12i,b=-3i,c=12u,d=9223372036854775807i,e=-9223372036854775808i,f=18446744073709551615u",
        &[
            ("m", "a", R, 12.0),
            ("m", "b", R, -3.0),
            ("m", "c", R, 12.0),
            ("m", "d", R, 9_223_372_036_854_775_807.0),
            ("m", "e", R, -9_223_372_036_854_775_808.0),
            ("m", "f", R, 18_446_744_073_709_551_615.0),
        ],
    ),
    (
        "booleans in every spelling are one and zero",
        Ns,
        "m a=t,b=T,c=true,d=True,e=TRUE,f=f,g=F,h=false,i=False,j=FALSE",
        &[
            ("m", "a", R, 1.0),
            ("m", "b", R, 1.0),
            ("m", "c", R, 1.0),
            ("m", "d", R, 1.0),
            ("m", "e", R, 1.0),
            ("m", "f", R, 0.0),
            ("m", "g", R, 0.0),
            ("m", "h", R, 0.0),
            ("m", "i", R, 0.0),
            ("m", "j", R, 0.0),
        ],
    ),
    (
        "escaped commas, spaces and equals signs in names",
        Ns,
        r"my\ meas\,ure\=x,tag\ key=tag\,value field\=key\ 1=1",
        &[("my meas,ure=x", "field=key 1", R, 1.0)],
    ),
    (
        "an escaped device tag value",
        Ns,
        r"cpu,device=d\ 1\,a\=b f=1",
        &[("d 1,a=b", "f", R, 1.0)],
    ),
    (
        "a backslash before anything else is itself",
        Ns,
        r"m\x,t=a\\b f\n=1",
        &[(r"m\x", r"f\n", R, 1.0)],
    ),
    (
        "an equals sign needs no escape in a measurement",
        Ns,
        "a=b f=1",
        &[("a=b", "f", R, 1.0)],
    ),
    (
        "unicode names",
        Ns,
        "température,device=capteur-é valeur=1",
        &[("capteur-é", "valeur", R, 1.0)],
    ),
    (
        "a tag escaped to look like device is not the device tag",
        Ns,
        r"m,device\ =d1 f=1",
        &[("m", "f", R, 1.0)],
    ),
    (
        "comments, blank lines, CRLF and surrounding white space",
        S,
        "# a comment\n\n   \r\n  m f=1 1700000000  \r\n\t# another, indented\nm f=2\t1700000001\r\n\n",
        &[
            ("m", "f", 1_700_000_000_000, 1.0),
            ("m", "f", 1_700_000_001_000, 2.0),
        ],
    ),
    (
        "several spaces between sections",
        S,
        "m,t=1   a=1,b=2    1700000000",
        &[
            ("m", "a", 1_700_000_000_000, 1.0),
            ("m", "b", 1_700_000_000_000, 2.0),
        ],
    ),
    (
        "string fields are skipped, the others kept",
        S,
        "m a=1,s=\"text, with = \\\"quotes\\\" and \\\\ \",b=2 1700000000",
        &[
            ("m", "a", 1_700_000_000_000, 1.0),
            ("m", "b", 1_700_000_000_000, 2.0),
        ],
    ),
    (
        "a line of only string fields gives no point",
        Ns,
        "syslog message=\"hello\"\nm f=1",
        &[("m", "f", R, 1.0)],
    ),
    (
        "repeated fields and points are all kept, in order",
        Ns,
        "m f=1,f=2\nm f=3",
        &[("m", "f", R, 1.0), ("m", "f", R, 2.0), ("m", "f", R, 3.0)],
    ),
    ("an empty body gives nothing", Ns, "", &[]),
    (
        "a body of comments gives nothing",
        Ns,
        "# nothing\n# here",
        &[],
    ),
];

#[test]
fn accepted_bodies_give_their_points() {
    for (behaviour, precision, body, expected) in ACCEPTED {
        let batch = parse(body, *precision).unwrap_or_else(|error| panic!("{behaviour}: {error}"));
        let expected: Vec<(String, String, i64, f64)> = expected
            .iter()
            .map(|(device, field, timestamp, value)| {
                (device.to_string(), field.to_string(), *timestamp, *value)
            })
            .collect();
        assert_eq!(points(&batch), expected, "{behaviour}");
        for (point, expected) in batch.points.iter().zip(&expected) {
            assert_eq!(point.value.to_bits(), expected.3.to_bits(), "{behaviour}");
        }
    }
}

/// `(behaviour, precision, body, error message)`.
const REJECTED: &[(&str, Precision, &str, &str)] = &[
    (
        "a field key without value",
        Ns,
        "m,device=d1 f=1\nm,device=d1 f=2\ncpu temp 1",
        r#"line 3: expected "=" after field key "temp", found " ""#,
    ),
    (
        "a measurement without fields",
        Ns,
        "cpu",
        "line 1: expected a space and fields after the measurement and tags, found end of line",
    ),
    (
        "tags without fields",
        Ns,
        "cpu,host=a\n",
        "line 1: expected a space and fields after the measurement and tags, found end of line",
    ),
    (
        "a space without fields",
        Ns,
        "cpu,host=a  \n",
        "line 1: expected fields after the measurement and tags, found end of line",
    ),
    (
        "a line starting with a comma",
        Ns,
        ",host=a f=1",
        r#"line 1: expected a measurement, found ",""#,
    ),
    (
        "a tag key without value",
        Ns,
        "cpu,host f=1",
        r#"line 1: expected "=" after tag key "host", found " ""#,
    ),
    (
        "an empty tag key",
        Ns,
        "cpu,=a f=1",
        r#"line 1: expected a tag key after ",", found "=""#,
    ),
    (
        "an empty tag value",
        Ns,
        "cpu,host= f=1",
        r#"line 1: expected a value for tag "host", found " ""#,
    ),
    (
        "an unescaped equals sign in a tag value",
        Ns,
        "cpu,a=b=c f=1",
        r#"line 1: expected "," or " " after the value of tag "a", found "=""#,
    ),
    (
        "a field without value",
        Ns,
        "cpu f=",
        r#"line 1: field "f": expected a value after "=", found end of line"#,
    ),
    (
        "a field with an empty value before a comma",
        Ns,
        "cpu f=,g=1",
        r#"line 1: field "f": expected a value after "=", found ",""#,
    ),
    (
        "a trailing comma after the fields",
        Ns,
        "cpu f=1,",
        "line 1: expected a field key, found end of line",
    ),
    (
        "an empty field key",
        Ns,
        "cpu f=1,=2",
        r#"line 1: expected a field key, found "=""#,
    ),
    (
        "a word as a value",
        Ns,
        "cpu f=abc",
        r#"line 1: field "f": expected a float (1.5), integer (12i), unsigned integer (12u), boolean (true) or string ("on"), got "abc""#,
    ),
    (
        "NaN, which line protocol lacks",
        Ns,
        "cpu f=NaN",
        r#"line 1: field "f": expected a float (1.5), integer (12i), unsigned integer (12u), boolean (true) or string ("on"), got "NaN""#,
    ),
    (
        "infinity, which line protocol lacks",
        Ns,
        "cpu f=inf",
        r#"line 1: field "f": expected a float (1.5), integer (12i), unsigned integer (12u), boolean (true) or string ("on"), got "inf""#,
    ),
    (
        "a malformed float",
        Ns,
        "cpu f=1..2",
        r#"line 1: field "f": expected a float such as 1.5 or -1e3, got "1..2""#,
    ),
    (
        "a float beyond the 64-bit range",
        Ns,
        "cpu f=1e400",
        r#"line 1: field "f": expected a float within the 64-bit range, got "1e400""#,
    ),
    (
        "a fractional integer",
        Ns,
        "cpu f=1.5i",
        r#"line 1: field "f": expected a 64-bit integer such as 12i, got "1.5i""#,
    ),
    (
        "an integer beyond 64 bits",
        Ns,
        "cpu f=9223372036854775808i",
        r#"line 1: field "f": expected a 64-bit integer such as 12i, got "9223372036854775808i""#,
    ),
    (
        "a negative unsigned integer",
        Ns,
        "cpu f=-1u",
        r#"line 1: field "f": expected an unsigned 64-bit integer such as 12u, got "-1u""#,
    ),
    (
        "a string without closing quote",
        Ns,
        "cpu f=1\ncpu s=\"abc\ncpu f=2\n",
        r#"line 2: field "s": expected a closing quote for the string value, found the end of the body"#,
    ),
    (
        "text right after a string",
        Ns,
        "cpu s=\"a\"x",
        r#"line 1: expected "," or " " after the value of field "s", found "x""#,
    ),
    (
        "a lone carriage return",
        Ns,
        "cpu f=1\rcpu f=2",
        r#"line 1: expected "," or " " after the value of field "f", found "\r""#,
    ),
    (
        "a timestamp that is not a number",
        Ns,
        "cpu f=1 abc",
        r#"line 1: expected a timestamp in nanoseconds as an integer, got "abc""#,
    ),
    (
        "a fractional timestamp",
        S,
        "cpu f=1 1700000000.5",
        r#"line 1: expected a timestamp in seconds as an integer, got "1700000000.5""#,
    ),
    (
        "text after the timestamp",
        Ns,
        "cpu f=1 1 2",
        r#"line 1: expected the end of the line after the timestamp, found "2""#,
    ),
    (
        "a timestamp just before 1970",
        Ns,
        "cpu f=1 -1",
        "line 1: expected a timestamp between 1970-01-01 and 3000-01-01, got -1 (precision ns)",
    ),
    (
        "a timestamp after the year 3000",
        Ms,
        "cpu f=1 32503680000001",
        "line 1: expected a timestamp between 1970-01-01 and 3000-01-01, got 32503680000001 (precision ms)",
    ),
    (
        "milliseconds sent as seconds",
        S,
        "cpu f=1 1700000000000",
        "line 1: expected a timestamp between 1970-01-01 and 3000-01-01, got 1700000000000 (precision s)",
    ),
    (
        "seconds that overflow milliseconds",
        S,
        "cpu f=1 9223372036854775807",
        "line 1: expected a timestamp between 1970-01-01 and 3000-01-01, got 9223372036854775807 (precision s)",
    ),
    (
        "a timestamp beyond 64 bits",
        Ns,
        "cpu f=1 9223372036854775808",
        r#"line 1: expected a timestamp in nanoseconds as an integer, got "9223372036854775808""#,
    ),
    (
        "line numbers count comments, blank lines and CRLF",
        Ns,
        "# header\r\n\r\nm f=1\r\n\nm f=x\n",
        r#"line 5: field "f": expected a float (1.5), integer (12i), unsigned integer (12u), boolean (true) or string ("on"), got "x""#,
    ),
    (
        "line numbers count newlines inside string values",
        Ns,
        "m s=\"two\nlines\"\nm f=1 x",
        r#"line 3: expected a timestamp in nanoseconds as an integer, got "x""#,
    ),
];

#[test]
fn rejected_bodies_name_the_line_and_the_problem() {
    for (behaviour, precision, body, expected) in REJECTED {
        assert_eq!(&error(body, *precision), expected, "{behaviour}");
    }
}

#[test]
fn a_malformed_line_fails_the_whole_body() {
    let mut body = "m,device=d1 f=1 1700000000000000000\n".repeat(1000);
    body.push_str("m,device=d1 f=oops 1700000000000000000\n");
    body.push_str(&"m,device=d1 f=1 1700000000000000000\n".repeat(10));
    assert_eq!(
        error(&body, Ns),
        r#"line 1001: field "f": expected a float (1.5), integer (12i), unsigned integer (12u), boolean (true) or string ("on"), got "oops""#
    );
}

#[test]
fn invalid_utf8_names_its_line() {
    let error = parse_line_protocol(
        b"m f=1\nm\xff f=1\n",
        Ns,
        Timestamp::from_millis(R),
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "line 2: expected UTF-8 text, found the byte 0xff"
    );
}

#[test]
fn skipped_string_fields_are_reported_per_line() {
    let body = "procstat,host=h1 pid=1i,cmdline=\"nginx\",user=\"www\"\n\
                m f=1\n\
                # comment\n\
                m a=\"1\",b=\"2\",c=\"3\",d=\"4\",e=5\n\
                m s\\ 1=\"x\"";
    let batch = parse(body, Ns).unwrap();
    let skipped: Vec<(usize, usize, Vec<String>)> = batch
        .skipped
        .iter()
        .map(|line| {
            (
                line.line,
                line.count,
                line.names.iter().map(|name| name.to_string()).collect(),
            )
        })
        .collect();
    assert_eq!(
        skipped,
        [
            (1, 2, vec!["cmdline".to_string(), "user".to_string()]),
            (4, 4, vec!["a".into(), "b".into(), "c".into()]),
            (5, 1, vec!["s 1".into()]),
        ]
    );
    assert_eq!(batch.skipped_count(), 7);
    assert_eq!(batch.points.len(), 3);
}

#[test]
fn skipped_lines_are_numbered_where_they_start() {
    let batch = parse("m s=\"a\nb\"\nm t=\"c\"", Ns).unwrap();
    let lines: Vec<usize> = batch.skipped.iter().map(|line| line.line).collect();
    assert_eq!(lines, [1, 3]);
}

#[test]
fn names_without_escapes_are_borrowed_from_the_body() {
    let batch = parse(r"cpu,device=d42 usage=1,with\ space=2", Ns).unwrap();
    let borrowed: Vec<(bool, bool)> = batch
        .points
        .iter()
        .map(|point| {
            (
                matches!(point.device, std::borrow::Cow::Borrowed(_)),
                matches!(point.field, std::borrow::Cow::Borrowed(_)),
            )
        })
        .collect();
    assert_eq!(borrowed, [(true, true), (true, false)]);
}

#[test]
fn points_become_store_points() {
    let batch = parse("cpu,device=d42 usage=12.5 1700000000", S).unwrap();
    let points: Vec<Point<'_>> = batch.store_points().collect();
    assert_eq!(
        points,
        [Point::new(
            "d42",
            "usage",
            Timestamp::from_millis(1_700_000_000_000),
            12.5
        )]
    );
}

#[test]
fn timestamps_before_1970_round_down_when_the_limits_allow_them() {
    let limits = Limits {
        earliest: Timestamp::from_millis(-10_000),
        ..Limits::default()
    };
    let parse = |body: &str, precision| {
        points(
            &parse_line_protocol(
                body.as_bytes(),
                precision,
                Timestamp::from_millis(R),
                &limits,
            )
            .unwrap(),
        )[0]
        .2
    };
    assert_eq!(parse("m f=1 -1", Ns), -1);
    assert_eq!(parse("m f=1 -1000000", Ns), -1);
    assert_eq!(parse("m f=1 -1000001", Ns), -2);
    assert_eq!(parse("m f=1 -1", Us), -1);
    assert_eq!(parse("m f=1 -1", Ms), -1);
    assert_eq!(parse("m f=1 -1", S), -1000);
    assert_eq!(parse("m f=1 999999", Ns), 0);
}

#[test]
fn names_up_to_1024_bytes_are_accepted_and_longer_ones_rejected() {
    let longest = "n".repeat(MAX_NAME_LEN);
    let body = format!("{longest} {longest}=1");
    let batch = parse(&body, Ns).unwrap();
    assert_eq!(batch.points[0].device, longest);
    assert_eq!(batch.points[0].field, longest);

    let too_long = "n".repeat(MAX_NAME_LEN + 1);
    let cut = format!("{}…", "n".repeat(64));
    assert_eq!(
        error(&format!("{too_long} f=1"), Ns),
        format!(r#"line 1: device "{cut}": expected a name of at most 1024 bytes, got 1025 bytes"#)
    );
    assert_eq!(
        error(&format!("m,device={too_long} f=1"), Ns),
        format!(r#"line 1: device "{cut}": expected a name of at most 1024 bytes, got 1025 bytes"#)
    );
    assert_eq!(
        error(&format!("m {too_long}=1"), Ns),
        format!(r#"line 1: field "{cut}": expected a name of at most 1024 bytes, got 1025 bytes"#)
    );
    // Escapes count once they are undone: 1024 bytes of name in 1025 of text.
    let escaped = format!(r"m\ {}", "n".repeat(MAX_NAME_LEN - 2));
    assert_eq!(
        parse(&format!("{escaped} f=1"), Ns).unwrap().points[0]
            .device
            .len(),
        MAX_NAME_LEN
    );
}

#[test]
fn a_line_has_at_most_1000_fields_by_default() {
    let line = |count: usize| {
        let fields: Vec<String> = (0..count).map(|index| format!("f{index}=1")).collect();
        format!("m {}", fields.join(","))
    };
    assert_eq!(parse(&line(1000), Ns).unwrap().points.len(), 1000);
    assert_eq!(
        error(&line(1001), Ns),
        "line 1: expected at most 1000 fields, got more"
    );
}

#[test]
fn precision_is_parsed_from_its_query_value() {
    for (text, precision) in [("ns", Ns), ("us", Us), ("ms", Ms), ("s", S)] {
        assert_eq!(text.parse::<Precision>(), Ok(precision));
        assert_eq!(precision.to_string(), text);
    }
    assert_eq!(Precision::default(), Ns);
    assert_eq!(
        "h".parse::<Precision>().unwrap_err().to_string(),
        r#"expected precision ns, us, ms or s, got "h""#
    );
}
