//! [`PointBatch`]: the points of one request, owning their names in one buffer, so that
//! a batch can wait in the write queue after the payload it came from is gone.

use fleetwire_store::{Point, Timestamp};

/// Points to write, with the device and field names packed into one string.
///
/// Consecutive points of the same device share its name; a batch of a thousand points
/// costs two allocations, not two thousand.
#[derive(Debug, Default, Clone)]
pub struct PointBatch {
    names: String,
    points: Vec<Packed>,
}

#[derive(Debug, Clone, Copy)]
struct Packed {
    device: (u32, u32),
    field: (u32, u32),
    timestamp: i64,
    value: f64,
}

impl PointBatch {
    /// An empty batch with room for `points` points.
    pub fn with_capacity(points: usize) -> PointBatch {
        PointBatch {
            names: String::with_capacity(points * 12),
            points: Vec::with_capacity(points),
        }
    }

    /// Adds a point.
    pub fn push(&mut self, point: Point<'_>) {
        let device = match self.points.last() {
            Some(last) if self.slice(last.device) == point.device => last.device,
            _ => self.intern(point.device),
        };
        let field = self.intern(point.field);
        self.points.push(Packed {
            device,
            field,
            timestamp: point.timestamp.as_millis(),
            value: point.value,
        });
    }

    /// Adds every point of `points`.
    pub fn extend<'a>(&mut self, points: impl IntoIterator<Item = Point<'a>>) {
        for point in points {
            self.push(point);
        }
    }

    /// Adds every point of `other`, in order. Costs two copies of plain memory (names and
    /// points), not a name lookup per point.
    pub fn append(&mut self, other: &PointBatch) {
        // Names are at most MAX_NAME_LEN bytes and batches are bounded, so this fits.
        let shift = self.names.len() as u32;
        self.names.push_str(&other.names);
        self.points.reserve(other.points.len());
        self.points.extend(other.points.iter().map(|packed| Packed {
            device: (packed.device.0 + shift, packed.device.1),
            field: (packed.field.0 + shift, packed.field.1),
            ..*packed
        }));
    }

    /// The device of each run of consecutive points of one device, in order: a device
    /// comes again when its points are not all together.
    pub fn device_runs(&self) -> impl Iterator<Item = &str> + '_ {
        let mut previous = None;
        self.points.iter().filter_map(move |packed| {
            // Consecutive points of one device share its interned name (see `push`).
            if previous == Some(packed.device) {
                return None;
            }
            previous = Some(packed.device);
            Some(self.slice(packed.device))
        })
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether the batch has no points.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The points, in the order they were added.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Point<'_>> + '_ {
        self.points.iter().map(|packed| Point {
            device: self.slice(packed.device),
            field: self.slice(packed.field),
            timestamp: Timestamp::from_millis(packed.timestamp),
            value: packed.value,
        })
    }

    /// The points grouped into rows: runs of consecutive points with the same device and
    /// timestamp (one telemetry message, usually), each as `(device, timestamp, points)`.
    pub fn rows(&self) -> impl Iterator<Item = Row<'_>> + '_ {
        let mut start = 0;
        std::iter::from_fn(move || {
            let first = self.points.get(start)?;
            let device = self.slice(first.device);
            let length = self.points[start..]
                .iter()
                .take_while(|packed| {
                    packed.timestamp == first.timestamp && self.slice(packed.device) == device
                })
                .count();
            let row = Row {
                batch: self,
                device,
                timestamp: Timestamp::from_millis(first.timestamp),
                range: start..start + length,
            };
            start += length;
            Some(row)
        })
    }

    fn intern(&mut self, name: &str) -> (u32, u32) {
        let start = self.names.len();
        self.names.push_str(name);
        // Names are at most MAX_NAME_LEN bytes and batches are bounded, so this fits.
        (start as u32, name.len() as u32)
    }

    fn slice(&self, (start, length): (u32, u32)) -> &str {
        let start = start as usize;
        self.names.get(start..start + length as usize).unwrap_or("")
    }
}

/// The points of one device at one timestamp, from [`PointBatch::rows`].
#[derive(Debug, Clone)]
pub struct Row<'a> {
    batch: &'a PointBatch,
    /// The device.
    pub device: &'a str,
    /// When.
    pub timestamp: Timestamp,
    range: std::ops::Range<usize>,
}

impl<'a> Row<'a> {
    /// `(field, value)` of every point of the row.
    pub fn fields(&self) -> impl ExactSizeIterator<Item = (&'a str, f64)> + '_ {
        let batch = self.batch;
        batch.points[self.range.clone()]
            .iter()
            .map(move |packed| (batch.slice(packed.field), packed.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_group_consecutive_points_of_one_device_and_time() {
        let mut batch = PointBatch::default();
        let at = Timestamp::from_millis;
        batch.push(Point::new("a", "t", at(1), 1.0));
        batch.push(Point::new("a", "h", at(1), 2.0));
        batch.push(Point::new("a", "t", at(2), 3.0));
        batch.push(Point::new("b", "t", at(2), 4.0));
        type Owned = (String, i64, Vec<(String, f64)>);
        let rows: Vec<Owned> = batch
            .rows()
            .map(|row| {
                (
                    row.device.to_owned(),
                    row.timestamp.as_millis(),
                    row.fields()
                        .map(|(field, value)| (field.to_owned(), value))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                ("a".into(), 1, vec![("t".into(), 1.0), ("h".into(), 2.0)]),
                ("a".into(), 2, vec![("t".into(), 3.0)]),
                ("b".into(), 2, vec![("t".into(), 4.0)]),
            ]
        );
        let points: Vec<Point<'_>> = batch.iter().collect();
        assert_eq!(points[3], Point::new("b", "t", at(2), 4.0));
    }

    #[test]
    fn appended_batches_keep_every_point_in_order() {
        let at = Timestamp::from_millis;
        let mut first = PointBatch::default();
        first.push(Point::new("a", "temperature", at(1), 1.0));
        first.push(Point::new("a", "humidity", at(1), 2.0));
        let mut second = PointBatch::with_capacity(2);
        second.push(Point::new("b", "temperature", at(2), 3.0));
        second.push(Point::new("bb", "t", at(3), 4.0));
        let mut merged = PointBatch::default();
        merged.append(&first);
        merged.append(&second);
        merged.append(&PointBatch::default());
        let expected: Vec<Point<'_>> = first.iter().chain(second.iter()).collect();
        assert_eq!(merged.iter().collect::<Vec<_>>(), expected);
        assert_eq!(merged.len(), 4);
        assert_eq!(merged.rows().count(), 3);
        assert_eq!(merged.device_runs().collect::<Vec<_>>(), ["a", "b", "bb"]);
    }

    #[test]
    fn device_runs_name_each_change_of_device() {
        let at = Timestamp::from_millis;
        let mut batch = PointBatch::default();
        for (device, field) in [("a", "t"), ("a", "h"), ("b", "t"), ("a", "t"), ("a", "h")] {
            batch.push(Point::new(device, field, at(1), 1.0));
        }
        assert_eq!(batch.device_runs().collect::<Vec<_>>(), ["a", "b", "a"]);
        assert_eq!(PointBatch::default().device_runs().count(), 0);
    }
}
