//! Reading telemetry back: the latest value of every field of a device, and raw points or
//! windowed aggregates over a range, within the platform's limits (points per field,
//! windows per query). Segments are read on a blocking thread.

use std::collections::BTreeMap;
use std::time::Duration;

use fleetwire_model::DeviceId;
use fleetwire_store::{Aggregation, Sample, Store};
use fleetwire_time::Timestamp;

use crate::error::{Error, Result};

/// Most points one query answers per field, and most windows it may ask for; more ask for
/// (coarser) aggregation.
pub const MAX_POINTS: usize = 1_000_000;
/// The range a query covers when it gives no `from`.
pub const DEFAULT_RANGE: Duration = Duration::from_secs(3600);

/// What a telemetry query asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelemetryQuery {
    /// The fields; every field of the device when `None`.
    pub fields: Option<Vec<String>>,
    /// Start, inclusive; `to` minus [`DEFAULT_RANGE`] when `None`.
    pub from: Option<Timestamp>,
    /// End, exclusive; now when `None`.
    pub to: Option<Timestamp>,
    /// Windows of this length combined this way, aligned to multiples of the length
    /// since the epoch and stamped with their start; raw points when `None`.
    pub windows: Option<(Aggregation, Duration)>,
}

/// The points of one field.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The field.
    pub field: String,
    /// Its points (or windows), oldest first.
    pub samples: Vec<Sample>,
}

/// The newest value of every field of `device`.
pub(crate) fn latest(store: &Store, device: &DeviceId) -> BTreeMap<String, Sample> {
    store.latest(device.as_str()).into_iter().collect()
}

/// Answers `query` over `device`'s telemetry.
pub(crate) async fn query(
    store: &Store,
    device: &DeviceId,
    query: TelemetryQuery,
) -> Result<Vec<Series>> {
    let to = query
        .to
        .unwrap_or_else(|| Timestamp::from_millis(Timestamp::now().as_millis() + 1));
    let from = query.from.unwrap_or_else(|| {
        Timestamp::from_millis(
            to.as_millis()
                .saturating_sub(DEFAULT_RANGE.as_millis() as i64),
        )
    });
    if from > to {
        return Err(Error::InvalidQuery(format!(
            "from ({}) is after to ({})",
            from.as_millis(),
            to.as_millis()
        )));
    }
    if let Some((_, every)) = query.windows {
        let windows = (to.as_millis() - from.as_millis()) as u128 / every.as_millis().max(1);
        if windows > MAX_POINTS as u128 {
            return Err(Error::Invalid(format!(
                "every {every:?} makes {windows} windows over this range; at most {MAX_POINTS}: \
                 choose a longer every or a shorter range"
            )));
        }
    }
    let store = store.clone();
    let fields = match query.fields {
        Some(fields) => fields,
        None => store.latest(device.as_str()).into_keys().collect(),
    };
    let device = device.as_str().to_owned();
    let windows = query.windows;
    // Reading segments is blocking file I/O.
    tokio::task::spawn_blocking(move || {
        fields
            .into_iter()
            .map(|field| {
                let samples = match windows {
                    Some((aggregation, every)) => {
                        store.aggregate(&device, &field, from, to, every, aggregation)
                    }
                    None => store.range(&device, &field, from, to),
                }?;
                if samples.len() > MAX_POINTS {
                    return Err(Error::Invalid(format!(
                        "field {field:?} has {} points in this range; at most {MAX_POINTS} are \
                         answered: choose a shorter range or aggregate with agg and every",
                        samples.len()
                    )));
                }
                Ok(Series { field, samples })
            })
            .collect()
    })
    .await
    .map_err(|_| Error::ShuttingDown)?
}
