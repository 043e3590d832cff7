//! Client certificates pinned to devices: pin (idempotent), list, unpin, the login check,
//! and what deleting the device and upgrading the schema do to them.

use fleetwire_model::{DeviceId, Fingerprint, NewDevice, NewPinnedCertificate};
use fleetwire_registry::Error;
use sqlx::Executor as _;

use crate::backend::{TestRegistry, on_both_backends};

on_both_backends!(
    a_pinned_certificate_is_listed_and_pinning_it_again_changes_nothing,
    unpinning_removes_only_that_certificate_and_a_second_unpin_is_not_found,
    the_login_check_admits_any_certificate_until_one_is_pinned,
    certificates_of_unknown_devices_are_not_found,
    deleting_a_device_removes_its_pins,
    a_database_of_the_previous_schema_gains_the_certificates_table,
);

async fn device(test: &TestRegistry, name: &str) -> DeviceId {
    let id = DeviceId::new(name).unwrap();
    test.registry
        .create_device(NewDevice {
            id: Some(id.clone()),
            ..NewDevice::default()
        })
        .await
        .unwrap();
    id
}

fn fingerprint(byte: u8) -> Fingerprint {
    Fingerprint::from_bytes([byte; 32])
}

fn certificate(byte: u8, common_name: &str) -> NewPinnedCertificate {
    NewPinnedCertificate {
        fingerprint: fingerprint(byte),
        common_name: Some(common_name.to_owned()),
        not_after: Some(1_800_000_000_000),
    }
}

async fn a_pinned_certificate_is_listed_and_pinning_it_again_changes_nothing(test: TestRegistry) {
    let registry = &test.registry;
    let meter = device(&test, "meter").await;
    assert_eq!(registry.certificates(&meter).await.unwrap(), []);

    let (first, created) = registry
        .pin_certificate(&meter, certificate(1, "meter"))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(first.fingerprint, fingerprint(1));
    assert_eq!(first.common_name.as_deref(), Some("meter"));
    assert_eq!(first.not_after, Some(1_800_000_000_000));
    assert!(first.added_at > 1_700_000_000_000, "{first:?}");

    // Again, even with other details: the stored pin comes back unchanged.
    let again = NewPinnedCertificate {
        not_after: None,
        ..certificate(1, "meter")
    };
    let (second, created) = registry.pin_certificate(&meter, again).await.unwrap();
    assert!(!created);
    assert_eq!(second, first);

    let (other, created) = registry
        .pin_certificate(&meter, certificate(2, "meter"))
        .await
        .unwrap();
    assert!(created);
    let listed = registry.certificates(&meter).await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0], first);
    assert_eq!(listed[1], other);

    // Another registry on the same database (a restart, a second node) sees them.
    let reopened = test.open_again().await;
    assert_eq!(reopened.certificates(&meter).await.unwrap(), listed);
}

async fn unpinning_removes_only_that_certificate_and_a_second_unpin_is_not_found(
    test: TestRegistry,
) {
    let registry = &test.registry;
    let meter = device(&test, "meter").await;
    for byte in [1, 2] {
        registry
            .pin_certificate(&meter, certificate(byte, "meter"))
            .await
            .unwrap();
    }
    registry
        .unpin_certificate(&meter, &fingerprint(1))
        .await
        .unwrap();
    let listed = registry.certificates(&meter).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].fingerprint, fingerprint(2));

    let error = registry
        .unpin_certificate(&meter, &fingerprint(1))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::NotFound { kind: "certificate", id } if *id == fingerprint(1).to_string()),
        "{error:?}"
    );
}

async fn the_login_check_admits_any_certificate_until_one_is_pinned(test: TestRegistry) {
    let registry = &test.registry;
    let meter = device(&test, "meter").await;
    let ghost = DeviceId::new("ghost").unwrap();
    assert_eq!(
        registry
            .certificate_admits(&ghost, &fingerprint(1))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        registry
            .certificate_admits(&meter, &fingerprint(1))
            .await
            .unwrap(),
        Some(true)
    );

    registry
        .pin_certificate(&meter, certificate(1, "meter"))
        .await
        .unwrap();
    registry
        .pin_certificate(&meter, certificate(2, "meter"))
        .await
        .unwrap();
    let admits = async |byte| {
        registry
            .certificate_admits(&meter, &fingerprint(byte))
            .await
            .unwrap()
    };
    assert_eq!(admits(1).await, Some(true));
    assert_eq!(admits(2).await, Some(true));
    assert_eq!(admits(3).await, Some(false));

    // Another device's pins do not count for this one.
    let other = device(&test, "other").await;
    registry
        .pin_certificate(&other, certificate(3, "other"))
        .await
        .unwrap();
    assert_eq!(admits(3).await, Some(false));

    // Unpinning every certificate opens the device to any certificate again.
    for byte in [1, 2] {
        registry
            .unpin_certificate(&meter, &fingerprint(byte))
            .await
            .unwrap();
    }
    assert_eq!(admits(3).await, Some(true));
}

async fn certificates_of_unknown_devices_are_not_found(test: TestRegistry) {
    let registry = &test.registry;
    let ghost = DeviceId::new("ghost").unwrap();
    let is_device_not_found =
        |error: &Error| matches!(error, Error::NotFound { kind: "device", id } if id == "ghost");
    let error = registry
        .pin_certificate(&ghost, certificate(1, "ghost"))
        .await
        .unwrap_err();
    assert!(is_device_not_found(&error), "{error:?}");
    let error = registry.certificates(&ghost).await.unwrap_err();
    assert!(is_device_not_found(&error), "{error:?}");
    let error = registry
        .unpin_certificate(&ghost, &fingerprint(1))
        .await
        .unwrap_err();
    assert!(is_device_not_found(&error), "{error:?}");
}

async fn deleting_a_device_removes_its_pins(test: TestRegistry) {
    let registry = &test.registry;
    let meter = device(&test, "meter").await;
    registry
        .pin_certificate(&meter, certificate(1, "meter"))
        .await
        .unwrap();
    registry.delete_device(&meter).await.unwrap();

    // A new device of the same id starts without pins: any certificate logs it in.
    let meter = device(&test, "meter").await;
    assert_eq!(registry.certificates(&meter).await.unwrap(), []);
    assert_eq!(
        registry
            .certificate_admits(&meter, &fingerprint(9))
            .await
            .unwrap(),
        Some(true)
    );
}

/// A database written before pinning existed (schema version 3) is upgraded when opened:
/// its devices stay and can be given pins.
async fn a_database_of_the_previous_schema_gains_the_certificates_table(test: TestRegistry) {
    let meter = device(&test, "meter").await;
    test.registry.close().await;
    {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(test.url()).await.unwrap();
        pool.execute("DROP TABLE device_certificates")
            .await
            .unwrap();
        pool.execute("DELETE FROM registry_migrations WHERE version = 4")
            .await
            .unwrap();
        pool.close().await;
    }

    let upgraded = test.open_again().await;
    assert_eq!(upgraded.certificates(&meter).await.unwrap(), []);
    let (pinned, created) = upgraded
        .pin_certificate(&meter, certificate(1, "meter"))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(upgraded.certificates(&meter).await.unwrap(), [pinned]);
}
