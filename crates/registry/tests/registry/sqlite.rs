//! What only the embedded SQLite database does.

use std::time::{Duration, Instant};

use fleetwire_model::{DeviceId, NewDevice};
use fleetwire_registry::Registry;

use crate::backend::TempDir;

/// SQLite's own checkpoint runs inside whichever commit crosses 1,000 log pages (a 5 ms
/// commit now and then); the registry turns it off and checkpoints in the background
/// instead. Without that, nothing would reach the database file until the last connection
/// closed and the log would grow for as long as the process runs.
#[tokio::test]
async fn the_write_ahead_log_is_checkpointed_in_the_background() {
    let dir = TempDir::new();
    let registry = Registry::open_in_dir(&dir.0).await.unwrap();
    let database = dir.0.join("registry.db");
    let size = || std::fs::metadata(&database).map_or(0, |metadata| metadata.len());
    let before = size();
    for index in 0..200 {
        let id = DeviceId::new(format!("checkpointed-{index:03}")).unwrap();
        registry
            .create_device(NewDevice {
                id: Some(id),
                ..NewDevice::default()
            })
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while size() <= before {
        assert!(
            Instant::now() < deadline,
            "registry.db stayed at {before} bytes for 10 s after 200 devices were created"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    registry.close().await;
}
