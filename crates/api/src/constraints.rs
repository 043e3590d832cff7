//! What the server checks in a value, said in JSON Schema for the OpenAPI document: the
//! syntax of ids, the sizes of names and labels, the words a parameter takes. The checks
//! themselves live where the values are parsed (the registry's constructors, the query
//! parsers of this crate); these schemas restate them, and the schemathesis run
//! (`tests/openapi/run`) keeps the two in step by sending values both inside and outside
//! them.
//!
//! Parameters and body fields name them by marker types, inlined where they are used
//! (`("id" = inline(PlainId), Path)`, `#[schema(value_type = Option<DeviceName>, inline)]`),
//! so none becomes a component of the document and each field keeps its description.

// The syntax of every id (devices, rules, alarms, commands) and of command names is the
// model's: 1-128 characters of `A-Z a-z 0-9 _ . -`.
use fleetwire_model::{
    FINGERPRINT_PATTERN, PLAIN_NAME_MAX_LEN as PLAIN_NAME_MAX, PLAIN_NAME_PATTERN,
    PLAIN_NAME_PREFIX_PATTERN,
};
use utoipa::PartialSchema;
use utoipa::openapi::schema::{
    AdditionalProperties, AnyOfBuilder, ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::{OneOfBuilder, RefOr};

/// Text without control characters (Unicode category Cc), which the registry refuses in
/// names, types and labels.
const NO_CONTROL_PATTERN: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// A cursor: base64url without padding, as the registry writes them (whole groups of
/// four characters, then two or three whose unused bits are zero).
const CURSOR_PATTERN: &str = "^(?:[A-Za-z0-9_-]{4})*\
                              (?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$";
/// What Rust's `str::trim` removes (Unicode White_Space), as a character class body:
/// parsers trim their values, and `\s` means other things in other regex engines.
const WHITESPACE: &str =
    "\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
/// One part of a duration as `params::parse_duration` reads it: a whole number with a
/// unit. The document allows nine digits (leading zeros aside), so that no sum of parts
/// it allows overflows; the parser takes larger numbers as long as the sum fits.
const DURATION_PART: &str = "0*[0-9]{1,9}(?:ms|s|m|h|d|w)";
/// Most labels on a device, in a label filter and in a rule's match.
pub(crate) const MAX_LABELS: usize = 64;

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn enumeration(words: &[&str]) -> ObjectBuilder {
    string().enum_values(Some(words.iter().copied()))
}

/// Declares marker types: uninhabited enums whose schema is the expression given.
macro_rules! marker {
    ($($(#[$doc:meta])* $name:ident => $schema:expr;)*) => {
        $(
            $(#[$doc])*
            pub(crate) enum $name {}

            impl PartialSchema for $name {
                fn schema() -> RefOr<Schema> {
                    $schema.into()
                }
            }

            impl utoipa::ToSchema for $name {}
        )*
    };
}

marker! {
    /// A device, rule, alarm or command id.
    PlainId => plain_name_builder();
    /// The start of an id (empty: every id).
    IdPrefix => string()
        .max_length(Some(PLAIN_NAME_MAX))
        .pattern(Some(PLAIN_NAME_PREFIX_PATTERN));
    /// The `next_cursor` of a previous page.
    Cursor => string()
        .min_length(Some(2))
        .pattern(Some(CURSOR_PATTERN))
        .description(Some(
            "The `next_cursor` of the previous page, unchanged: base64url text that only this \
             server issues (another is a 400)",
        ));
    /// Repeated `label=key:value` filters.
    LabelFilter => ArrayBuilder::new()
        .items(string().pattern(Some(":")).description(Some("`key:value`")))
        .max_items(Some(MAX_LABELS));
    /// The `status` filter of alarms.
    AlarmStatusFilter => enumeration(&["active", "acknowledged", "cleared", "open"]);
    /// A severity.
    SeverityName => enumeration(&["low", "medium", "high", "critical"]);
    /// The `agg` of a telemetry query (`mean` is another name for `avg`).
    AggregationName => enumeration(&["avg", "mean", "min", "max", "sum", "count", "first", "last"]);
    /// The `precision` of line protocol timestamps.
    PrecisionName => enumeration(&["ns", "us", "ms", "s"]);
    /// A duration with units, such as `10s` or `1h30m`, longer than zero (one of its
    /// numbers has a digit other than 0).
    DurationText => string().pattern(Some(format!("^(?=[^1-9]*[1-9]){}", duration_body())));
    /// An instant: milliseconds since the epoch, or an RFC 3339 date-time.
    Instant => string().pattern(Some(
        "^[+-]?[0-9]{1,18}$|^[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])[Tt ]\
         (?:[01][0-9]|2[0-3]):[0-5][0-9]:(?:[0-5][0-9]|60)(?:\\.[0-9]+)?\
         (?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$",
    ));
    /// Field names separated by commas, at least one.
    FieldList => string().pattern(Some(format!("[^,{WHITESPACE}]")));
    /// Event kinds separated by commas (none: no events).
    EventKindList => {
        let kind = format!("[{WHITESPACE}]*(?:(?:telemetry|presence|alarm|command)[{WHITESPACE}]*)?");
        string().pattern(Some(format!("^{kind}(?:,{kind})*$")))
    };
    /// A command name.
    CommandName => plain_name_builder();
    /// A device's name: at most 256 characters.
    DeviceName => text(0, 256);
    /// A device's type (or the type a rule matches): at most 64 characters.
    DeviceType => text(0, 64);
    /// A token's name: 1-128 characters, not `bootstrap` (the data dir's admin token).
    TokenName => text(1, 128)
        .pattern(Some("^(?!bootstrap$)[^\\u0000-\\u001f\\u007f-\\u009f]*$"));
    /// A rule's name: 1-256 characters.
    RuleName => text(1, 256);
    /// Labels: at most 64, keys of 1-64 characters, values of at most 256.
    Labels => ObjectBuilder::new()
        .schema_type(Type::Object)
        .max_properties(Some(MAX_LABELS))
        .property_names(Some(text(1, 64)))
        .additional_properties(Some(text(0, 256)));
    /// The devices a rule matches: at most 1000 ids.
    RuleDevices => ArrayBuilder::new()
        .items(plain_name_builder())
        .max_items(Some(1000));
    /// How long a rule's condition must hold: a duration with units or a number of
    /// seconds, from 0 to a year.
    RuleDuration => OneOfBuilder::new()
        .item(string().pattern(Some(format!("^{}", duration_body()))))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .minimum(Some(0))
                .maximum(Some(365 * 86_400)),
        )
        .examples([serde_json::json!("10s")]);
    /// A webhook's URL: `http://` or `https://` and a host, at most 2048 characters.
    WebhookUrl => text(1, 2048).pattern(Some(
        "^https?://[^/\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$",
    ));
    /// A republish topic template: at most 1024 characters, no wildcards (`+`, `#`), no
    /// leading `$`.
    RepublishTopic => text(1, 1024).pattern(Some(
        "^[^$+#\\u0000-\\u001f\\u007f-\\u009f][^+#\\u0000-\\u001f\\u007f-\\u009f]*$",
    ));
    /// A telemetry payload (`devices/{id}/telemetry`): an object of fields (numbers,
    /// booleans, objects of them, flattened as `a.b`) with an optional `ts` (ms) or
    /// `timestamp` (s) and `device_id`, or an array of such objects.
    TelemetryPayload => OneOfBuilder::new()
        .item(telemetry_row())
        .item(ArrayBuilder::new().items(telemetry_row()).min_items(Some(1)))
        .description(Some(
            "An object of fields with an optional `ts` (ms since the epoch) or `timestamp` \
             (seconds), or an array of them; also the flat form with `device_id`, which must \
             be the path's. Field values are numbers, booleans or objects of them (flattened \
             as `a.b`). A payload with nothing to store is refused whole (400).",
        ))
        .examples([
            serde_json::json!({"temperature": 21.5, "humidity": 40.2, "ts": 1_714_566_896_789_i64}),
        ]);
    /// A certificate's SHA-256 fingerprint: 64 hex digits, or 32 pairs separated by `:`.
    FingerprintText => string().pattern(Some(FINGERPRINT_PATTERN));
    /// One certificate in PEM. Any text is taken; one that is not a single certificate
    /// naming the device is a 400.
    CertificatePem => string().examples([serde_json::json!(
        "-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n"
    )]);
    /// Any JSON value, `null` included.
    AnyJson => ObjectBuilder::new().schema_type(SchemaType::AnyValue);
}

/// A duration's parts, with the whitespace the parser trims around them, to the end.
fn duration_body() -> String {
    format!("[{WHITESPACE}]*(?:{DURATION_PART})+[{WHITESPACE}]*$")
}

fn plain_name_builder() -> ObjectBuilder {
    string()
        .min_length(Some(1))
        .max_length(Some(PLAIN_NAME_MAX))
        .pattern(Some(PLAIN_NAME_PATTERN))
}

fn telemetry_row() -> ObjectBuilder {
    let number = || ObjectBuilder::new().schema_type(Type::Number);
    let field = AnyOfBuilder::new()
        .item(number())
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        .item(ObjectBuilder::new().schema_type(Type::Object));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .min_properties(Some(1))
        .property("ts", number())
        .property("timestamp", number())
        .property("device_id", plain_name_builder())
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::AnyOf(
            field.build(),
        )))))
}

fn text(min: usize, max: usize) -> ObjectBuilder {
    string()
        .min_length((min > 0).then_some(min))
        .max_length(Some(max))
        .pattern(Some(NO_CONTROL_PATTERN))
}
