//! Query building blocks: merging runs of points from several sources with last-write-wins,
//! and folding points and block summaries into aligned windows.

use std::collections::BTreeMap;

use crate::block::Summary;
use crate::types::{Aggregation, Sample};
use fleetwire_time::Timestamp;

/// Sorted points of one source, oldest source first when several are merged.
pub(crate) type Run = (Vec<i64>, Vec<f64>);

/// Merges runs given oldest source first into one sorted run with one point per timestamp:
/// where sources disagree, the newest wins.
pub(crate) fn merge_runs(mut runs: Vec<Run>) -> Run {
    runs.retain(|(timestamps, _)| !timestamps.is_empty());
    if runs.len() <= 1 {
        return runs.pop().unwrap_or_default();
    }
    let is_ordered = runs
        .windows(2)
        .all(|pair| match (pair[0].0.last(), pair[1].0.first()) {
            (Some(last), Some(first)) => last < first,
            _ => true,
        });
    if is_ordered {
        let total = runs.iter().map(|(timestamps, _)| timestamps.len()).sum();
        let mut timestamps = Vec::with_capacity(total);
        let mut values = Vec::with_capacity(total);
        for (run_timestamps, run_values) in runs {
            timestamps.extend_from_slice(&run_timestamps);
            values.extend_from_slice(&run_values);
        }
        return (timestamps, values);
    }
    let mut points: Vec<(i64, f64)> = runs
        .into_iter()
        .flat_map(|(timestamps, values)| timestamps.into_iter().zip(values))
        .collect();
    // Stable: among equal timestamps the newest source stays last.
    points.sort_by_key(|&(timestamp, _)| timestamp);
    let mut timestamps = Vec::with_capacity(points.len());
    let mut values: Vec<f64> = Vec::with_capacity(points.len());
    for (timestamp, value) in points {
        if timestamps.last() == Some(&timestamp) {
            if let Some(slot) = values.last_mut() {
                *slot = value;
            }
        } else {
            timestamps.push(timestamp);
            values.push(value);
        }
    }
    (timestamps, values)
}

/// Keeps the points of a sorted run with `from <= timestamp < to`.
pub(crate) fn trim(run: &mut Run, from: i64, to: i64) {
    let (timestamps, values) = run;
    let end = timestamps.partition_point(|&timestamp| timestamp < to);
    timestamps.truncate(end);
    values.truncate(end);
    let start = timestamps.partition_point(|&timestamp| timestamp < from);
    timestamps.drain(..start);
    values.drain(..start);
}

/// Running aggregate of one window.
#[derive(Debug, Clone, Copy)]
struct Accumulator {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    first: (i64, f64),
    last: (i64, f64),
}

impl Accumulator {
    fn of_point(timestamp: i64, value: f64) -> Accumulator {
        Accumulator {
            count: 1,
            sum: value,
            min: value,
            max: value,
            first: (timestamp, value),
            last: (timestamp, value),
        }
    }

    fn of_summary(summary: &Summary) -> Accumulator {
        Accumulator {
            count: u64::from(summary.count),
            sum: summary.sum,
            min: summary.min,
            max: summary.max,
            first: (summary.min_timestamp, summary.first),
            last: (summary.max_timestamp, summary.last),
        }
    }

    #[inline]
    fn add_later(&mut self, timestamp: i64, value: f64) {
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.last = (timestamp, value);
    }

    fn merge(&mut self, other: &Accumulator) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if other.first.0 < self.first.0 {
            self.first = other.first;
        }
        if other.last.0 > self.last.0 {
            self.last = other.last;
        }
    }

    fn value(&self, aggregation: Aggregation) -> f64 {
        match aggregation {
            Aggregation::Avg => self.sum / self.count as f64,
            Aggregation::Min => self.min,
            Aggregation::Max => self.max,
            Aggregation::Sum => self.sum,
            Aggregation::Count => self.count as f64,
            Aggregation::First => self.first.1,
            Aggregation::Last => self.last.1,
        }
    }
}

/// Windows of `every` milliseconds aligned to the epoch, filled from disjoint pieces in any
/// order.
#[derive(Debug)]
pub(crate) struct Windows {
    every: i64,
    windows: BTreeMap<i64, Accumulator>,
}

impl Windows {
    pub(crate) fn new(every: i64) -> Windows {
        Windows {
            every,
            windows: BTreeMap::new(),
        }
    }

    /// The window a timestamp falls in.
    pub(crate) fn window(&self, timestamp: i64) -> i64 {
        timestamp.div_euclid(self.every)
    }

    fn add(&mut self, window: i64, accumulator: Accumulator) {
        self.windows
            .entry(window)
            .and_modify(|existing| existing.merge(&accumulator))
            .or_insert(accumulator);
    }

    /// Adds the points of a sorted run.
    pub(crate) fn add_run(&mut self, timestamps: &[i64], values: &[f64]) {
        let mut current: Option<(i64, Accumulator)> = None;
        for (&timestamp, &value) in timestamps.iter().zip(values) {
            let window = self.window(timestamp);
            match &mut current {
                Some((open, accumulator)) if *open == window => {
                    accumulator.add_later(timestamp, value)
                }
                _ => {
                    if let Some((open, accumulator)) = current.take() {
                        self.add(open, accumulator);
                    }
                    current = Some((window, Accumulator::of_point(timestamp, value)));
                }
            }
        }
        if let Some((open, accumulator)) = current {
            self.add(open, accumulator);
        }
    }

    /// Adds a block summary lying inside one window.
    pub(crate) fn add_summary(&mut self, summary: &Summary) {
        let window = self.window(summary.min_timestamp);
        self.add(window, Accumulator::of_summary(summary));
    }

    /// One sample per window with points, stamped with the window's start.
    pub(crate) fn finish(self, aggregation: Aggregation) -> Vec<Sample> {
        let every = self.every;
        self.windows
            .into_iter()
            .map(|(window, accumulator)| Sample {
                timestamp: Timestamp::from_millis(window.saturating_mul(every)),
                value: accumulator.value(aggregation),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_source_wins_on_equal_timestamps() {
        let merged = merge_runs(vec![
            (vec![1, 2, 3], vec![1.0, 2.0, 3.0]),
            (vec![2, 4], vec![20.0, 40.0]),
        ]);
        assert_eq!(merged, (vec![1, 2, 3, 4], vec![1.0, 20.0, 3.0, 40.0]));
    }

    #[test]
    fn windows_align_to_the_epoch_including_negative_times() {
        let mut windows = Windows::new(10);
        windows.add_run(&[-15, -5, 0, 9, 10], &[1.0, 2.0, 3.0, 4.0, 5.0]);
        let samples = windows.finish(Aggregation::Sum);
        let pairs: Vec<(i64, f64)> = samples
            .iter()
            .map(|sample| (sample.timestamp.as_millis(), sample.value))
            .collect();
        assert_eq!(pairs, [(-20, 1.0), (-10, 2.0), (0, 7.0), (10, 5.0)]);
    }
}
