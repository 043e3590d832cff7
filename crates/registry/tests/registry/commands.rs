//! Commands: pending → delivered → succeeded | failed, expiry at the deadline, final states
//! staying final, ownership by a device, listing per device.

use fleetwire_model::{Command, CommandId, CommandStatus, DeviceId, NewCommand, NewDevice};
use fleetwire_registry::{Error, Registry};
use serde_json::json;

use crate::backend::{TestRegistry, on_both_backends};

on_both_backends!(
    command_goes_pending_delivered_succeeded,
    pending_command_completes_directly,
    final_commands_stay_final,
    expiry_covers_pending_and_delivered_commands,
    deadline_holds_before_the_sweep,
    deleting_a_device_deletes_its_commands,
    command_of_another_device_is_not_found,
    command_for_unknown_device_is_not_found,
    invalid_commands_are_refused,
    command_pages_are_newest_first_per_device,
    pending_commands_are_the_undelivered_ones_still_due,
);

fn device_id(text: &str) -> DeviceId {
    DeviceId::new(text).unwrap()
}

async fn create_devices(registry: &Registry, names: &[&str]) {
    for name in names {
        registry
            .create_device(NewDevice {
                id: Some(device_id(name)),
                ..NewDevice::default()
            })
            .await
            .unwrap();
    }
}

fn reboot(device: &str, timeout_ms: i64) -> NewCommand {
    NewCommand {
        device_id: device_id(device),
        name: "reboot".to_owned(),
        params: json!({"delay_s": 5, "reason": "update"}),
        timeout_ms,
    }
}

async fn send(registry: &Registry, device: &str, at: i64, timeout_ms: i64) -> Command {
    registry
        .create_command(reboot(device, timeout_ms), at)
        .await
        .unwrap()
}

async fn command_goes_pending_delivered_succeeded(test: TestRegistry) {
    let registry = &test.registry;
    create_devices(registry, &["boiler-7"]).await;
    let created = send(registry, "boiler-7", 10_000, 30_000).await;
    let text = created.id.as_str();
    assert!(text.starts_with("cmd-") && text.len() == 20, "{text}");
    assert_eq!(created.device_id, device_id("boiler-7"));
    assert_eq!(created.name, "reboot");
    assert_eq!(created.params, json!({"delay_s": 5, "reason": "update"}));
    assert_eq!(created.status, CommandStatus::Pending);
    assert_eq!(created.result, None);
    assert_eq!((created.created_at, created.updated_at), (10_000, 10_000));
    assert_eq!(created.expires_at, 40_000);
    assert_eq!((created.delivered_at, created.completed_at), (None, None));
    assert_eq!(
        registry
            .command(&created.device_id, &created.id)
            .await
            .unwrap(),
        created
    );

    let delivered = registry
        .mark_command_delivered(&created.id, 10_050)
        .await
        .unwrap()
        .expect("a pending command becomes delivered");
    assert_eq!(delivered.status, CommandStatus::Delivered);
    assert_eq!(delivered.delivered_at, Some(10_050));
    assert_eq!(delivered.updated_at, 10_050);
    // Delivered once only.
    assert_eq!(
        registry
            .mark_command_delivered(&created.id, 10_060)
            .await
            .unwrap(),
        None
    );

    let succeeded = registry
        .complete_command(
            &created.id,
            true,
            Some(json!({"uptime_s": 0, "log": ["ok"]})),
            12_000,
        )
        .await
        .unwrap()
        .expect("a delivered command completes");
    assert_eq!(succeeded.status, CommandStatus::Succeeded);
    assert!(succeeded.status.is_final());
    assert_eq!(
        succeeded.result,
        Some(json!({"uptime_s": 0, "log": ["ok"]}))
    );
    assert_eq!(succeeded.completed_at, Some(12_000));
    assert_eq!(succeeded.delivered_at, Some(10_050));
    assert_eq!(succeeded.updated_at, 12_000);
    assert_eq!(
        registry
            .command(&created.device_id, &created.id)
            .await
            .unwrap(),
        succeeded
    );
    assert_eq!(registry.next_command_expiry().await.unwrap(), None);
}

async fn pending_command_completes_directly(test: TestRegistry) {
    let registry = &test.registry;
    create_devices(registry, &["boiler-7"]).await;
    let created = send(registry, "boiler-7", 1_000, 5_000).await;
    // The answer overtook the delivery receipt.
    let failed = registry
        .complete_command(&created.id, false, Some(json!("disk full")), 1_500)
        .await
        .unwrap()
        .expect("a pending command completes");
    assert_eq!(failed.status, CommandStatus::Failed);
    assert_eq!(failed.result, Some(json!("disk full")));
    assert_eq!(failed.delivered_at, None);
    assert_eq!(failed.completed_at, Some(1_500));
    // Without a result.
    let other = send(registry, "boiler-7", 1_000, 5_000).await;
    let succeeded = registry
        .complete_command(&other.id, true, None, 1_200)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(succeeded.status, CommandStatus::Succeeded);
    assert_eq!(succeeded.result, None);
}

async fn final_commands_stay_final(test: TestRegistry) {
    let registry = &test.registry;
    create_devices(registry, &["boiler-7"]).await;
    let succeeded = send(registry, "boiler-7", 1_000, 5_000).await;
    let succeeded = registry
        .complete_command(&succeeded.id, true, Some(json!(1)), 2_000)
        .await
        .unwrap()
        .unwrap();
    let failed = send(registry, "boiler-7", 1_000, 5_000).await;
    let failed = registry
        .complete_command(&failed.id, false, None, 2_000)
        .await
        .unwrap()
        .unwrap();
    send(registry, "boiler-7", 1_000, 1_000).await;
    let expired = registry.expire_commands(2_000).await.unwrap();
    assert_eq!(expired.len(), 1);
    let expired = &expired[0];
    assert_eq!(expired.status, CommandStatus::Expired);

    for command in [&succeeded, expired, &failed] {
        assert_eq!(
            registry
                .mark_command_delivered(&command.id, 3_000)
                .await
                .unwrap(),
            None
        );
        for is_success in [true, false] {
            assert_eq!(
                registry
                    .complete_command(&command.id, is_success, Some(json!(2)), 3_000)
                    .await
                    .unwrap(),
                None
            );
        }
        assert_eq!(
            registry
                .command(&command.device_id, &command.id)
                .await
                .unwrap(),
            *command
        );
    }
    // The sweep leaves finished commands alone, even long after their deadline.
    assert!(
        registry
            .expire_commands(1_000_000)
            .await
            .unwrap()
            .is_empty()
    );
    // Unknown commands change nothing either.
    let ghost = CommandId::new("cmd-0000000000000000").unwrap();
    assert_eq!(
        registry.mark_command_delivered(&ghost, 1).await.unwrap(),
        None
    );
    assert_eq!(
        registry
            .complete_command(&ghost, true, None, 1)
            .await
            .unwrap(),
        None
    );
}

async fn expiry_covers_pending_and_delivered_commands(test: TestRegistry) {
    let registry = &test.registry;
    assert_eq!(registry.next_command_expiry().await.unwrap(), None);
    assert!(registry.expire_commands(i64::MAX).await.unwrap().is_empty());
    create_devices(registry, &["d1", "d2"]).await;
    let soon_pending = send(registry, "d1", 0, 2_000).await;
    let soon_delivered = send(registry, "d2", 0, 3_000).await;
    registry
        .mark_command_delivered(&soon_delivered.id, 100)
        .await
        .unwrap()
        .unwrap();
    let finished = send(registry, "d1", 0, 1_000).await;
    registry
        .complete_command(&finished.id, true, None, 500)
        .await
        .unwrap()
        .unwrap();
    let later = send(registry, "d2", 0, 60_000).await;

    // The finished command's deadline (1 s) no longer counts.
    assert_eq!(registry.next_command_expiry().await.unwrap(), Some(2_000));
    assert!(registry.expire_commands(1_999).await.unwrap().is_empty());
    // Up to and including `now`, in deadline order.
    let expired = registry.expire_commands(3_000).await.unwrap();
    let expired_ids: Vec<&CommandId> = expired.iter().map(|command| &command.id).collect();
    assert_eq!(expired_ids, vec![&soon_pending.id, &soon_delivered.id]);
    for command in &expired {
        assert_eq!(command.status, CommandStatus::Expired);
        assert_eq!(command.completed_at, Some(3_000));
        assert_eq!(command.updated_at, 3_000);
        assert_eq!(command.result, None);
        assert_eq!(
            registry
                .command(&command.device_id, &command.id)
                .await
                .unwrap(),
            *command
        );
    }
    assert_eq!(expired[1].delivered_at, Some(100));
    // Expired once only.
    assert!(registry.expire_commands(3_000).await.unwrap().is_empty());
    // A late answer does not revive an expired command.
    assert_eq!(
        registry
            .complete_command(&soon_delivered.id, true, None, 3_500)
            .await
            .unwrap(),
        None
    );
    assert_eq!(registry.next_command_expiry().await.unwrap(), Some(60_000));
    assert_eq!(
        registry
            .command(&later.device_id, &later.id)
            .await
            .unwrap()
            .status,
        CommandStatus::Pending
    );
}

async fn deadline_holds_before_the_sweep(test: TestRegistry) {
    let registry = &test.registry;
    create_devices(registry, &["d1"]).await;
    let command = send(registry, "d1", 0, 1_000).await;
    // At or past the deadline, not swept yet: neither delivered nor completed.
    assert_eq!(
        registry
            .mark_command_delivered(&command.id, 1_000)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        registry
            .complete_command(&command.id, true, None, 1_001)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        registry
            .command(&command.device_id, &command.id)
            .await
            .unwrap(),
        command
    );
    // The sweep then expires it.
    let expired = registry.expire_commands(1_002).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].id, command.id);
}

async fn deleting_a_device_deletes_its_commands(test: TestRegistry) {
    let registry = &test.registry;
    create_devices(registry, &["doomed", "kept"]).await;
    let doomed = send(registry, "doomed", 0, 1_000).await;
    send(registry, "doomed", 0, 2_000).await;
    let kept = send(registry, "kept", 0, 5_000).await;
    registry.delete_device(&device_id("doomed")).await.unwrap();
    assert!(matches!(
        registry
            .command(&doomed.device_id, &doomed.id)
            .await
            .unwrap_err(),
        Error::NotFound {
            kind: "command",
            ..
        }
    ));
    assert_eq!(registry.next_command_expiry().await.unwrap(), Some(5_000));
    // A new device under the old id starts with no commands.
    create_devices(registry, &["doomed"]).await;
    let page = registry
        .list_commands(&device_id("doomed"), 100, None)
        .await
        .unwrap();
    assert!(page.items.is_empty());
    let expired = registry.expire_commands(10_000).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].id, kept.id);
}

async fn command_of_another_device_is_not_found(test: TestRegistry) {
    let registry = &test.registry;
    create_devices(registry, &["owner", "intruder"]).await;
    let command = send(registry, "owner", 0, 1_000).await;
    let error = registry
        .command(&device_id("intruder"), &command.id)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::NotFound { kind: "command", id } if *id == command.id.to_string()),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!("command \"{}\" not found", command.id)
    );
    assert!(matches!(
        registry
            .command(&device_id("owner"), &CommandId::new("cmd-x").unwrap())
            .await
            .unwrap_err(),
        Error::NotFound {
            kind: "command",
            ..
        }
    ));
}

async fn command_for_unknown_device_is_not_found(test: TestRegistry) {
    let registry = &test.registry;
    let error = registry
        .create_command(reboot("ghost", 1_000), 0)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::NotFound { kind: "device", id } if id == "ghost"),
        "{error:?}"
    );
    let error = registry
        .list_commands(&device_id("ghost"), 10, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::NotFound { kind: "device", .. }),
        "{error:?}"
    );
    assert_eq!(registry.next_command_expiry().await.unwrap(), None);
}

async fn invalid_commands_are_refused(test: TestRegistry) {
    let registry = &test.registry;
    create_devices(registry, &["d1"]).await;
    let with = |change: fn(&mut NewCommand)| {
        let mut new = reboot("d1", 1_000);
        change(&mut new);
        new
    };
    let cases: Vec<(NewCommand, String)> = vec![
        (
            with(|new| new.name = String::new()),
            "command name \"\": expected 1-128 characters of A-Z, a-z, 0-9, '_', '.', '-'"
                .to_owned(),
        ),
        (
            with(|new| new.name = "set/point".to_owned()),
            "command name \"set/point\": expected 1-128 characters of A-Z, a-z, 0-9, '_', '.', '-'"
                .to_owned(),
        ),
        (
            with(|new| new.name = "x".repeat(129)),
            format!(
                "command name {:?}: expected 1-128 characters of A-Z, a-z, 0-9, '_', '.', '-'",
                "x".repeat(129)
            ),
        ),
        (
            with(|new| new.params = json!([1, 2])),
            "command params: expected a JSON object or null, got an array".to_owned(),
        ),
        (
            with(|new| new.params = json!("go")),
            "command params: expected a JSON object or null, got a string".to_owned(),
        ),
        (
            with(|new| new.params = json!({"blob": "x".repeat(64 * 1024)})),
            format!(
                "command params: expected at most 65536 bytes of JSON, got {}",
                64 * 1024 + 11
            ),
        ),
        (
            with(|new| new.timeout_ms = 999),
            "command timeout: expected 1000-604800000 ms (1 s to 7 days), got 999 ms".to_owned(),
        ),
        (
            with(|new| new.timeout_ms = 7 * 24 * 3600 * 1000 + 1),
            "command timeout: expected 1000-604800000 ms (1 s to 7 days), got 604800001 ms"
                .to_owned(),
        ),
    ];
    for (new, expected) in cases {
        let error = registry.create_command(new, 0).await.unwrap_err();
        assert!(matches!(&error, Error::Invalid(_)), "{error:?}");
        assert_eq!(error.to_string(), expected);
    }
    assert!(
        registry
            .list_commands(&device_id("d1"), 10, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // The limits themselves are fine; null parameters too.
    let at_limits = NewCommand {
        device_id: device_id("d1"),
        name: "A-z_0.9".repeat(19)[..128].to_owned(),
        params: serde_json::Value::Null,
        timeout_ms: 7 * 24 * 3600 * 1000,
    };
    let command = registry.create_command(at_limits, 0).await.unwrap();
    assert_eq!(command.params, serde_json::Value::Null);
    assert_eq!(
        registry
            .command(&command.device_id, &command.id)
            .await
            .unwrap(),
        command
    );
    // An oversized result is refused and changes nothing.
    let error = registry
        .complete_command(&command.id, true, Some(json!("x".repeat(64 * 1024))), 1)
        .await
        .unwrap_err();
    assert!(matches!(&error, Error::Invalid(_)), "{error:?}");
    assert_eq!(
        registry
            .command(&command.device_id, &command.id)
            .await
            .unwrap()
            .status,
        CommandStatus::Pending
    );
}

async fn command_pages_are_newest_first_per_device(test: TestRegistry) {
    let registry = &test.registry;
    create_devices(registry, &["d1", "d2"]).await;
    let mut expected = Vec::new();
    // Several share a creation time: ties are broken by id, newest (highest) first.
    for at in [5_000, 1_000, 3_000, 3_000, 3_000, 7_000, 2_000] {
        expected.push(send(registry, "d1", at, 60_000).await);
        send(registry, "d2", at, 60_000).await;
    }
    expected.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
    for limit in [1, 3, 7, 100] {
        let mut listed = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = registry
                .list_commands(&device_id("d1"), limit, cursor.as_deref())
                .await
                .unwrap();
            assert!(page.items.len() <= limit as usize);
            listed.extend(page.items);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(listed, expected, "limit {limit}");
    }
    for limit in [0, 1001] {
        let error = registry
            .list_commands(&device_id("d1"), limit, None)
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), format!("limit {limit}: expected 1-1000"));
    }
    let error = registry
        .list_commands(&device_id("d1"), 10, Some("!!!"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidCursor), "{error:?}");
}

async fn pending_commands_are_the_undelivered_ones_still_due(test: TestRegistry) {
    let registry = &test.registry;
    create_devices(registry, &["p1", "p2"]).await;
    let late = send(registry, "p1", 1_000, 60_000).await;
    let soon = send(registry, "p2", 1_000, 10_000).await;
    let delivered = send(registry, "p1", 1_000, 60_000).await;
    registry
        .mark_command_delivered(&delivered.id, 2_000)
        .await
        .unwrap()
        .unwrap();
    let answered = send(registry, "p2", 1_000, 60_000).await;
    registry
        .complete_command(&answered.id, true, None, 2_000)
        .await
        .unwrap()
        .unwrap();
    let ids = |commands: Vec<Command>| -> Vec<CommandId> {
        commands.into_iter().map(|command| command.id).collect()
    };
    // Earliest deadline first; delivered and answered ones are not pending.
    assert_eq!(
        ids(registry.pending_commands(5_000).await.unwrap()),
        vec![soon.id.clone(), late.id.clone()]
    );
    // A command whose deadline passed is not pending any more, swept or not.
    assert_eq!(
        ids(registry.pending_commands(11_000).await.unwrap()),
        vec![late.id]
    );
}
