//! The in-memory head: points written since the last flush, per series, sorted by time.
//!
//! Points that arrive in order are appended (the common case). A point older than the
//! series' newest goes to a small side list that is merged in once it grows, so
//! out-of-order data costs `O(log n)` per point amortised instead of shifting the whole
//! series. Readers merge the side list into what they copy out. A point with the
//! timestamp of an existing one replaces it: the last write wins.

use std::time::Instant;

use crate::types::SeriesId;

/// Out-of-order points kept aside before they are merged into a series.
const PENDING_LIMIT: usize = 1024;

/// The points of one series.
#[derive(Debug, Default, Clone)]
pub(crate) struct SeriesHead {
    timestamps: Vec<i64>,
    values: Vec<f64>,
    /// Out-of-order points in arrival order.
    pending: Vec<(i64, f64)>,
}

impl SeriesHead {
    #[inline]
    fn insert(&mut self, timestamp: i64, value: f64) {
        if self.pending.is_empty() {
            match self.timestamps.last() {
                Some(&last) if timestamp < last => {}
                Some(&last) if timestamp == last => {
                    if let Some(slot) = self.values.last_mut() {
                        *slot = value;
                    }
                    return;
                }
                _ => {
                    self.timestamps.push(timestamp);
                    self.values.push(value);
                    return;
                }
            }
        }
        self.pending.push((timestamp, value));
        if self.pending.len() >= PENDING_LIMIT {
            self.merge_pending();
        }
    }

    fn merge_pending(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        let (timestamps, values) = merge(
            &self.timestamps,
            &self.values,
            &mut pending,
            i64::MIN,
            i64::MAX,
        );
        self.timestamps = timestamps;
        self.values = values;
    }

    fn len(&self) -> usize {
        self.timestamps.len() + self.pending.len()
    }

    /// The points with `from <= timestamp < to`, sorted, one per timestamp.
    pub(crate) fn range(&self, from: i64, to: i64) -> (Vec<i64>, Vec<f64>) {
        match to.checked_sub(1) {
            Some(last) if from <= last => self.range_inclusive(from, last),
            _ => (Vec::new(), Vec::new()),
        }
    }

    /// Every point, sorted, one per timestamp.
    pub(crate) fn all(&self) -> (Vec<i64>, Vec<f64>) {
        self.range_inclusive(i64::MIN, i64::MAX)
    }

    fn range_inclusive(&self, first: i64, last: i64) -> (Vec<i64>, Vec<f64>) {
        if self.pending.is_empty() {
            let start = self
                .timestamps
                .partition_point(|&timestamp| timestamp < first);
            let end = self
                .timestamps
                .partition_point(|&timestamp| timestamp <= last);
            if start >= end {
                return (Vec::new(), Vec::new());
            }
            return (
                self.timestamps[start..end].to_vec(),
                self.values[start..end].to_vec(),
            );
        }
        let mut pending = self.pending.clone();
        merge(&self.timestamps, &self.values, &mut pending, first, last)
    }
}

/// Merges sorted unique `timestamps`/`values` with `pending` (arrival order, later wins),
/// keeping `first <= timestamp <= last`.
fn merge(
    timestamps: &[i64],
    values: &[f64],
    pending: &mut [(i64, f64)],
    first: i64,
    last: i64,
) -> (Vec<i64>, Vec<f64>) {
    // A stable sort keeps arrival order among equal timestamps, so the last one wins below.
    pending.sort_by_key(|&(timestamp, _)| timestamp);
    let start = timestamps.partition_point(|&timestamp| timestamp < first);
    let end = timestamps.partition_point(|&timestamp| timestamp <= last);
    let mut out_timestamps = Vec::with_capacity(end.saturating_sub(start) + pending.len());
    let mut out_values = Vec::with_capacity(end.saturating_sub(start) + pending.len());
    let mut main = start;
    let mut index = 0;
    while index < pending.len() {
        let (timestamp, mut value) = pending[index];
        index += 1;
        while index < pending.len() && pending[index].0 == timestamp {
            value = pending[index].1;
            index += 1;
        }
        if timestamp < first || timestamp > last {
            continue;
        }
        while main < end && timestamps[main] < timestamp {
            out_timestamps.push(timestamps[main]);
            out_values.push(values[main]);
            main += 1;
        }
        if main < end && timestamps[main] == timestamp {
            main += 1;
        }
        out_timestamps.push(timestamp);
        out_values.push(value);
    }
    out_timestamps.extend_from_slice(&timestamps[main..end.max(main)]);
    out_values.extend_from_slice(&values[main..end.max(main)]);
    (out_timestamps, out_values)
}

/// The head of every series.
#[derive(Debug, Default)]
pub(crate) struct Head {
    series: Vec<SeriesHead>,
    points: usize,
    /// When the first point since the last flush arrived.
    since: Option<Instant>,
}

impl Head {
    #[inline]
    pub(crate) fn insert(&mut self, id: SeriesId, timestamp: i64, value: f64) {
        let index = id.index();
        if index >= self.series.len() {
            self.series.resize_with(index + 1, SeriesHead::default);
        }
        let series = &mut self.series[index];
        let before = series.len();
        series.insert(timestamp, value);
        self.points = self.points + series.len() - before;
        if self.since.is_none() {
            self.since = Some(Instant::now());
        }
    }

    /// Points held (after merging equal timestamps that arrived in order).
    pub(crate) fn points(&self) -> usize {
        self.points
    }

    /// When the oldest unflushed point arrived.
    pub(crate) fn since(&self) -> Option<Instant> {
        self.since
    }

    pub(crate) fn series(&self, id: SeriesId) -> Option<&SeriesHead> {
        self.series.get(id.index())
    }

    /// Every series with points, by id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (SeriesId, &SeriesHead)> {
        self.series
            .iter()
            .enumerate()
            .filter(|(_, series)| series.len() > 0)
            .map(|(index, series)| (SeriesId::new(index as u32), series))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(series: &SeriesHead) -> Vec<(i64, f64)> {
        let (timestamps, values) = series.all();
        timestamps.into_iter().zip(values).collect()
    }

    #[test]
    fn out_of_order_points_are_sorted_and_the_last_write_wins() {
        let mut series = SeriesHead::default();
        for (timestamp, value) in [
            (10, 1.0),
            (20, 2.0),
            (20, 2.5),
            (5, 0.5),
            (15, 1.5),
            (5, 0.75),
            (30, 3.0),
        ] {
            series.insert(timestamp, value);
        }
        let expected = vec![(5, 0.75), (10, 1.0), (15, 1.5), (20, 2.5), (30, 3.0)];
        assert_eq!(collect(&series), expected);
        series.merge_pending();
        assert_eq!(collect(&series), expected);
        let (timestamps, _) = series.range(10, 30);
        assert_eq!(timestamps, [10, 15, 20]);
    }

    #[test]
    fn many_reversed_points_merge_in_batches() {
        let mut series = SeriesHead::default();
        for timestamp in (0..5000).rev() {
            series.insert(timestamp, timestamp as f64);
        }
        let points = collect(&series);
        assert_eq!(points.len(), 5000);
        assert!(
            points
                .iter()
                .enumerate()
                .all(|(index, &(timestamp, value))| timestamp == index as i64
                    && value == index as f64)
        );
    }
}
