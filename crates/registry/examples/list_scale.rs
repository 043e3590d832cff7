//! How fast a page of devices is at a million devices (issue 4: "cursor pagination that
//! stays fast at 1M devices"): registers N devices (types and labels spread over the
//! fleet) in a fresh SQLite registry, then times pages of 100 at the start, in the middle
//! and at the end of the listing, unfiltered and filtered by type, label, both, and id
//! prefix. Prints a markdown table; the last line is the same as JSON.
//!
//! ```sh
//! cargo run --release -p fleetwire-registry --example list_scale -- 1000000
//! ```

use std::time::{Duration, Instant};

use fleetwire_model::{DeviceFilter, DeviceId, Labels, NewDevice};
use fleetwire_registry::Registry;

const PAGE: u32 = 100;
const RUNS: usize = 50;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: usize = std::env::args()
        .nth(1)
        .map(|text| text.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let directory =
        std::env::temp_dir().join(format!("fleetwire-list-scale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    let registry = Registry::open_in_dir(&directory).await?;

    let started = Instant::now();
    let mut registering = tokio::task::JoinSet::new();
    let workers = 8;
    for worker in 0..workers {
        let registry = registry.clone();
        registering.spawn(async move {
            let mut index = worker;
            while index < count {
                registry.create_device(device(index)?).await?;
                index += workers;
            }
            Ok::<(), fleetwire_registry::Error>(())
        });
    }
    while let Some(done) = registering.join_next().await {
        done??;
    }
    let registration = started.elapsed();
    eprintln!("registered {count} devices in {registration:.1?}");

    let filters: Vec<(&str, DeviceFilter)> = vec![
        ("every device", DeviceFilter::default()),
        (
            "type = gateway (1 in 10)",
            DeviceFilter {
                device_type: Some("gateway".to_owned()),
                ..DeviceFilter::default()
            },
        ),
        (
            "label site = site-7 (1 in 50)",
            DeviceFilter {
                labels: labels(&[("site", "site-7")]),
                ..DeviceFilter::default()
            },
        ),
        (
            "type and two labels (1 in 1000)",
            DeviceFilter {
                device_type: Some("gateway".to_owned()),
                labels: labels(&[("site", "site-10"), ("floor", "3")]),
                ..DeviceFilter::default()
            },
        ),
        (
            "id prefix dev-004 (1 in 100 of 1M)",
            DeviceFilter {
                prefix: Some("dev-004".to_owned()),
                ..DeviceFilter::default()
            },
        ),
    ];
    println!("| filter | page | median | P99 | items |");
    println!("|---|---|---:|---:|---:|");
    let mut json = Vec::new();
    for (name, filter) in filters {
        // Cursors at the start, the middle and the end of this filter's listing.
        let cursors = cursors(&registry, &filter).await?;
        for (position, cursor) in cursors {
            let filter = DeviceFilter {
                cursor,
                limit: PAGE,
                ..filter.clone()
            };
            let mut times = Vec::with_capacity(RUNS);
            let mut items = 0;
            for _ in 0..RUNS {
                let started = Instant::now();
                let page = registry.list_devices(&filter).await?;
                times.push(started.elapsed());
                items = page.items.len();
            }
            times.sort();
            let median = times[RUNS / 2];
            let p99 = times[RUNS * 99 / 100];
            println!(
                "| {name} | {position} | {} | {} | {items} |",
                millis(median),
                millis(p99)
            );
            json.push(format!(
                "{{\"filter\":{name:?},\"page\":{position:?},\"median_ms\":{:.3},\"p99_ms\":{:.3},\"items\":{items}}}",
                median.as_secs_f64() * 1000.0,
                p99.as_secs_f64() * 1000.0
            ));
        }
    }
    println!(
        "{{\"devices\":{count},\"registration_s\":{:.1},\"pages\":[{}]}}",
        registration.as_secs_f64(),
        json.join(",")
    );
    registry.close().await;
    let _ = std::fs::remove_dir_all(&directory);
    Ok(())
}

fn device(index: usize) -> Result<NewDevice, fleetwire_registry::Error> {
    Ok(NewDevice {
        id: Some(DeviceId::new(format!("dev-{index:07}"))?),
        name: None,
        device_type: Some(if index % 10 == 0 { "gateway" } else { "sensor" }.to_owned()),
        labels: labels(&[
            ("site", &format!("site-{}", index % 50)),
            ("floor", &(index / 50 % 20).to_string()),
        ]),
    })
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

/// Cursors of the first page, a page in the middle and the last page of a listing, found
/// by walking it with the largest pages.
async fn cursors(
    registry: &Registry,
    filter: &DeviceFilter,
) -> Result<Vec<(&'static str, Option<String>)>, fleetwire_registry::Error> {
    let mut all = vec![None];
    let mut cursor = None;
    loop {
        let page = registry
            .list_devices(&DeviceFilter {
                cursor: cursor.clone(),
                limit: 1000,
                ..filter.clone()
            })
            .await?;
        match page.next_cursor {
            Some(next) => {
                all.push(Some(next.clone()));
                cursor = Some(next);
            }
            None => break,
        }
    }
    let middle = all[all.len() / 2].clone();
    let last = all[all.len() - 1].clone();
    Ok(vec![("first", None), ("middle", middle), ("last", last)])
}

fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}
